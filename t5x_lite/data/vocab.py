"""SentencePiece vocabulary with T5's id layout, and training one on local files.

T5's layout (``seqio.SentencePieceVocabulary``): the SentencePiece model has
``pad = 0``, ``eos = 1``, ``unk = 2`` and no BOS; ``extra_ids`` sentinel ids are
added *above* its pieces and count down from the top::

    vocab_size    = pieces + extra_ids                 (T5: 32000 + 100 = 32100)
    <extra_id_i>  = vocab_size - 1 - i                 (<extra_id_0> = 32099)

The bundled model (``default_vocabulary()``) has 7,900 pieces: vocab_size 8,000.
The model's embedding table may be bigger (T5 pads 32100 to 32128); that is
the model config's business, not the vocabulary's.

``encode`` adds no EOS (the pipeline appends it after objectives run);
``decode`` stops at the first EOS, drops pads, writes sentinels as
``<extra_id_N>`` and any id outside ``[0, vocab_size)`` as the unknown token,
so decoding a model's raw output never fails.

Example::

    vocab = default_vocabulary()
    ids = vocab.encode("Thank you for inviting me")
    vocab.decode(ids + [vocab.eos_id, 7, 7])        # 'Thank you for inviting me'
    vocab.decode([vocab.sentinel_id(0)] + ids[:2])  # '<extra_id_0> Thank you'
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from t5x_lite.data.objectives.encodings import VocabInfo
from t5x_lite.data.sources import DataError, Patterns, bundled_path, open_files

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_RESERVED_IDS = 3
MIN_CHARACTER_COVERAGE = 0.98

log = logging.getLogger(__name__)


class SentencePieceVocabulary:
    """A SentencePiece model plus ``extra_ids`` sentinels on top (T5's layout).

    The model is loaded (and its layout checked) when the vocabulary is built.
    Pickling keeps only the path and ``extra_ids``; a grain worker loads the
    processor again on first use, so the file must be readable there too.
    """

    def __init__(self, model_file: Union[str, os.PathLike], extra_ids: int = 100) -> None:
        if extra_ids < 0:
            raise ValueError(f"extra_ids must be >= 0, got {extra_ids}")
        self.model_file = os.fspath(model_file)
        self.extra_ids = int(extra_ids)
        self._sp: Any = None
        self._pieces: Optional[int] = None
        self.tokenizer  # load and validate now: a bad file fails here, not in a worker

    # -- loading ----------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The ``sentencepiece.SentencePieceProcessor`` (loaded on first use)."""
        if self._sp is None:
            self._sp = _load_processor(self.model_file)
            self._pieces = self._sp.get_piece_size()
        return self._sp

    def __getstate__(self) -> dict[str, Any]:
        return {"model_file": self.model_file, "extra_ids": self.extra_ids}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.model_file, self.extra_ids = state["model_file"], state["extra_ids"]
        self._sp, self._pieces = None, None

    def __repr__(self) -> str:
        return f"SentencePieceVocabulary({self.model_file!r}, extra_ids={self.extra_ids})"

    # -- layout -------------------------------------------------------------------------
    @property
    def num_pieces(self) -> int:
        """Pieces in the SentencePiece model (ids ``[0, num_pieces)``)."""
        if self._pieces is None:
            self.tokenizer
        return self._pieces  # type: ignore[return-value]

    @property
    def vocab_size(self) -> int:
        """Pieces plus extra ids: every id ``encode`` or an objective can produce."""
        return self.num_pieces + self.extra_ids

    pad_id = PAD_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    def sentinel_id(self, i: int) -> int:
        """Id of ``<extra_id_i>``: ``vocab_size - 1 - i``."""
        if not 0 <= i < self.extra_ids:
            raise ValueError(f"sentinel {i} out of range: this vocabulary has {self.extra_ids} extra ids")
        return self.vocab_size - 1 - i

    @property
    def fingerprint(self) -> str:
        """A short hash of the SentencePiece model's contents (not its path), which a run records."""
        return hashlib.sha256(self.tokenizer.serialized_model_proto()).hexdigest()[:12]

    def vocab_info(self) -> VocabInfo:
        """What the objectives need: size, extra ids, reserved ids (pad/eos/unk)."""
        return VocabInfo(vocab_size=self.vocab_size, num_extra_ids=self.extra_ids,
                         num_reserved_ids=NUM_RESERVED_IDS)

    # -- encoding -----------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no EOS. Sentinel text (``<extra_id_0>``) is not parsed."""
        return self.tokenizer.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode(list(texts), out_type=int)

    # -- decoding -----------------------------------------------------------------------
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: stops at the first EOS, drops pads, sentinels as ``<extra_id_N>``.

        Ids outside ``[0, vocab_size)`` decode as the unknown token. Sentinels
        are separated from the text around them by one space.
        """
        sp = self.tokenizer
        pieces, top = self.num_pieces, self.vocab_size
        segments: list[str] = []
        run: list[int] = []
        array = np.asarray(ids)  # a list, a NumPy or JAX array
        if array.dtype == object and array.ndim == 0:  # an iterator
            array = np.asarray(list(ids))
        if array.ndim != 1:
            raise ValueError(f"decode takes one sequence of ids, got shape {array.shape}; use decode_batch")
        for i in array.astype(np.int64).tolist():
            if i == EOS_ID:
                break
            if i == PAD_ID:
                continue
            if pieces <= i < top:
                if run:
                    segments.append(sp.decode(run))
                    run = []
                segments.append(f"<extra_id_{top - 1 - i}>")
            else:
                run.append(i if 0 <= i < pieces else UNK_ID)
        if run:
            segments.append(sp.decode(run))
        return " ".join(s.strip() for s in segments if s.strip())

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        """``decode`` of each row (a 2-D array or a list of id lists)."""
        return [self.decode(row) for row in batch]


def _load_processor(model_file: str):
    import sentencepiece as spm

    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"SentencePiece model {model_file!r} not found")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(model_file)
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{model_file}: not a SentencePiece model ({e})") from e
    layout = {"pad": sp.pad_id(), "eos": sp.eos_id(), "unk": sp.unk_id()}
    if layout != {"pad": PAD_ID, "eos": EOS_ID, "unk": UNK_ID}:
        raise ValueError(
            f"{model_file}: SentencePiece ids {layout}, but the T5 layout needs pad=0, eos=1, unk=2 "
            "(retrain with train_vocabulary, or spm_train --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1)"
        )
    return sp


def default_vocabulary(extra_ids: int = 100) -> SentencePieceVocabulary:
    """The bundled unigram model (7,900 pieces; vocab_size 8,000 with 100 extra ids)."""
    return SentencePieceVocabulary(bundled_path("spiece.model"), extra_ids=extra_ids)


def train_vocabulary(
    input_glob: Patterns,
    vocab_size: int,
    out_prefix: Union[str, os.PathLike],
    *,
    extra_ids: int = 100,
    text_field: Optional[str] = None,
    model_type: str = "unigram",
    character_coverage: float = 0.9999,
    byte_fallback: bool = True,
    max_sentences: int = 0,
    max_sentence_length: int = 16384,
    seed: int = 0,
    on_error: str = "raise",
) -> SentencePieceVocabulary:
    """Train a SentencePiece model with T5's layout on local files; write ``PREFIX.model/.vocab``.

    Args:
      input_glob: file(s) or glob(s), read by ``sources.open_files``: plain
        text (one document per line; ``.gz``/``.bz2`` fine), JSONL, TSV/CSV.
      vocab_size: the TOTAL size, extra ids included, as ``vocab_size`` of the
        result: the model gets ``vocab_size - extra_ids`` pieces (T5: 32100 =
        32000 pieces + 100). With ``byte_fallback`` the pieces must leave room
        for the 256 byte pieces and pad/eos/unk (and the corpus' characters).
      out_prefix: writes ``out_prefix + ".model"`` and ``+ ".vocab"``
        (parent directories are created); a file prefix, not a directory.
        Existing files are never overwritten: both are written under
        temporary names and renamed once training has succeeded.
      text_field: the field holding the text (JSONL/TSV/CSV); default ``"text"``.
      model_type, character_coverage (0.98 to 1), byte_fallback: as ``spm_train``; the
        normalization is ``nmt_nfkc`` and pad 0 / eos 1 / unk 2 / no BOS, as T5.
      max_sentences: train on the first this many documents (0: all).
      max_sentence_length: SentencePiece's limit in UTF-8 bytes per input
        text. Longer documents are split into chunks under it (at a newline,
        else a space, else between characters) and the count is logged.
      seed: SentencePiece's random seed. Training is single-threaded, with no
        input shuffling, so the same input and arguments give byte-identical files.
      on_error: as the sources' (``"raise"`` or ``"skip"`` bad records).

    Returns:
      The trained vocabulary, loaded from ``PREFIX.model``.
    """
    import sentencepiece as spm

    for name, value in (("extra_ids", extra_ids), ("max_sentences", max_sentences)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if max_sentence_length < 4:  # a UTF-8 character takes up to 4 bytes: every chunk must hold one
        raise ValueError(f"max_sentence_length must be >= 4 (bytes), got {max_sentence_length}")
    if not MIN_CHARACTER_COVERAGE <= character_coverage <= 1:  # SentencePiece's own range
        raise ValueError(f"character_coverage must be in [{MIN_CHARACTER_COVERAGE}, 1], got {character_coverage}")
    out = os.fspath(out_prefix)
    # ".model" is appended to the prefix: "dir/" would write "dir.model", "" a file with no name.
    if out.endswith(("/", os.sep)) or Path(out).name in ("", ".", "..") or Path(out).is_dir():
        raise ValueError(f"out_prefix {out!r} must be a file prefix (for PREFIX.model and PREFIX.vocab), "
                         "not a directory")
    out = Path(out)
    model_path, vocab_path = out.with_name(out.name + ".model"), out.with_name(out.name + ".vocab")
    existing = [str(p) for p in (model_path, vocab_path) if p.exists()]
    if existing:
        raise FileExistsError(f"{' and '.join(existing)}: already exist{'s' if len(existing) == 1 else ''}; "
                              "refusing to overwrite a vocabulary (give another prefix)")
    pieces = vocab_size - extra_ids
    minimum = NUM_RESERVED_IDS + (256 if byte_fallback else 0) + 1
    if pieces < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} with extra_ids={extra_ids} leaves {pieces} pieces; need at least "
            f"{minimum}{' (byte_fallback adds 256 byte pieces)' if byte_fallback else ''}"
        )
    field = text_field or "text"
    source = open_files(input_glob, [field], on_error=on_error)
    texts = [source[i][field] for i in range(len(source))]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise DataError(f"no text to train on in field {field!r} of {source.description}")
    if max_sentences:
        texts = texts[:max_sentences]
    # SentencePiece skips longer texts without a word at the log level used here, and fails with an
    # unreadable INTERNAL error when none is left: split them so every byte of the corpus is seen.
    long_docs = sum(1 for t in texts if len(t.encode("utf-8")) > max_sentence_length)
    if long_docs:
        before = len(texts)
        texts = [chunk for t in texts for chunk in _split_long_text(t, max_sentence_length)]
        log.warning("vocab: split %d document(s) of %s longer than %d bytes (SentencePiece's max_sentence_length)"
                    " into chunks; %d texts -> %d", long_docs, source.description, max_sentence_length,
                    before, len(texts))

    out.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,  # not model_prefix, which would be recorded in the model
            model_type=model_type,
            vocab_size=pieces,
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            pad_piece="<pad>",
            eos_piece="</s>",
            unk_piece="<unk>",
            byte_fallback=byte_fallback,
            character_coverage=character_coverage,
            normalization_rule_name="nmt_nfkc",
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=max_sentence_length,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise _training_error(str(e), source.description, vocab_size, extra_ids, character_coverage,
                              byte_fallback) from e
    # Temporary names until both files are complete, then published without replacing anything
    # that appeared meanwhile (training takes minutes): no half-written, mismatched or clobbered pair.
    suffix = f".tmp-{os.getpid()}"
    tmp_model, tmp_vocab = (p.with_name(p.name + suffix) for p in (model_path, vocab_path))
    published: list[Path] = []
    try:
        tmp_model.write_bytes(model.getvalue())
        sp = _load_processor(str(tmp_model))  # PREFIX.vocab as spm_train writes it: piece, tab, score (C++ "%g")
        rows = (f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))
        tmp_vocab.write_text("".join(rows), encoding="utf-8")
        for tmp, final in ((tmp_model, model_path), (tmp_vocab, vocab_path)):
            os.link(tmp, final)  # unlike rename, fails if ``final`` exists
            published.append(final)
    except BaseException:
        for final in published:
            final.unlink(missing_ok=True)
        raise
    finally:
        for tmp in (tmp_model, tmp_vocab):
            tmp.unlink(missing_ok=True)
    return SentencePieceVocabulary(model_path, extra_ids=extra_ids)


def _split_long_text(text: str, limit: int) -> list[str]:
    """``text`` in stripped, non-empty chunks of at most ``limit`` UTF-8 bytes.

    Cuts at the last newline in the second half of a window, else the last space or
    tab, else at a character boundary. Works on the bytes: ASCII whitespace never
    occurs inside a multi-byte UTF-8 sequence, and re-encoding the rest after each
    cut would be quadratic in the length of a very long document.
    """
    data = text.encode("utf-8")
    if len(data) <= limit:
        return [text]
    chunks, start = [], 0
    while len(data) - start > limit:
        end = start + limit
        cut = data.rfind(b"\n", start + limit // 2, end + 1)
        if cut <= start:
            cut = max(data.rfind(b" ", start, end + 1), data.rfind(b"\t", start, end + 1))
        if cut <= start:
            cut = data.rfind(b"\n", start, end + 1)
        if cut <= start:
            cut = end
            while data[cut] & 0xC0 == 0x80:  # a continuation byte: step back to the character's start
                cut -= 1
        chunks.append(data[start:cut])
        start = cut
    chunks.append(data[start:])
    return [c for c in (b.decode("utf-8").strip() for b in chunks) if c]


def _training_error(message: str, where: str, vocab_size: int, extra_ids: int, character_coverage: float,
                    byte_fallback: bool) -> Exception:
    """SentencePiece's error in this function's terms: ``vocab_size`` counts the extra ids, its numbers don't,
    and its hints name ``spm_train`` flags."""
    # "Vocabulary size too high (PIECES). Please set it to a value <= MAX_PIECES."
    high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message)
    if high:
        most = int(high.group(2)) + extra_ids
        return ValueError(
            f"vocab_size {vocab_size} is too large for {where}: it yields at most vocab_size {most} "
            f"({high.group(2)} SentencePiece pieces + {extra_ids} extra ids); lower vocab_size or add text")
    # "Vocabulary size is smaller than required_chars. PIECES vs NEEDED." (characters + special/byte pieces)
    small = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message)
    if small:
        least = int(small.group(2)) + extra_ids
        how = "raise vocab_size"
        if character_coverage > MIN_CHARACTER_COVERAGE:
            how += (f", or lower character_coverage (now {character_coverage:g}, at least "
                    f"{MIN_CHARACTER_COVERAGE}) to leave the rarest characters to unk/bytes")
        return ValueError(
            f"vocab_size {vocab_size} is too small for the characters in {where}: it needs at least vocab_size "
            f"{least} ({small.group(2)} pieces: the characters covered, pad/eos/unk"
            f"{' and 256 bytes' if byte_fallback else ''}; + {extra_ids} extra ids); {how}")
    if "!sentences_.empty()" in message:
        return DataError(f"SentencePiece found no text to train on in {where}")
    first = (message.strip().splitlines() or ["(no message)"])[0]
    return ValueError(f"SentencePiece training on {where} failed: {first}")
