"""A Hugging Face BERT tokenizer (WordPiece) as a task vocabulary: a converted BERT reads text as it was trained.

Backed by Hugging Face's ``tokenizers`` (the Rust tokenizer behind transformers'
``BertTokenizerFast``), loaded from a checkpoint directory's ``tokenizer.json`` or,
without one, from its ``vocab.txt`` and ``tokenizer_config.json`` (``do_lower_case``,
``strip_accents``, ``tokenize_chinese_chars``).

BERT's layout, built by the pipeline from what this vocabulary gives it:

    one text:   [CLS] text [SEP]                  token types 0 ... 0
    a pair:     [CLS] first [SEP] second [SEP]    token types 0 ... 0 1 ... 1

``encode`` returns ``[CLS]`` and the pieces; the closing ``[SEP]`` is the
vocabulary's ``eos_id``, which the pipeline appends after truncation, as it appends
EOS for T5. A task gives a pair as a tuple of two texts; the pipeline then cuts
the longer text first when the pair is too long (``tokenizers``' ``longest_first``)
and writes the token types. It serves fine-tuning and evaluation, and BERT's masked
LM (``bert_mlm``) for pretraining further: as Hugging Face's ``run_mlm.py``, each
document is ``[CLS] text [SEP]`` (``encode_documents``), concatenated and cut into
pieces, and ``[CLS]`` / ``[SEP]`` are never masked (``vocab_info``). The T5
objectives need sentinels above the pieces, which a WordPiece vocabulary has not.

Example::

    vocab = WordPieceVocabulary("path/to/bert-base-uncased")
    vocab.encode("Hello!")                    # [101, 7592, 999]
    vocab.encode_pair("A man.", "A person.")  # ([101, 1037, 2158, 1012, 102, 1037, 2711, 1012], 5)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from t5x_lite.data.sources import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPieceVocabulary:
    """A BERT WordPiece tokenizer: a directory (``tokenizer.json``, else ``vocab.txt``), or either file itself.

    ``tokenizer`` is the ``tokenizers.Tokenizer``, without truncation or padding (the pipeline does both).
    Pickling keeps only the path; unpickling loads the file again.
    """

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = os.fspath(path)
        self._load()  # a bad file fails here, not in a worker

    def _load(self) -> None:
        self.tokenizer = _load_tokenizer(Path(self.path))
        ids = {token: self.tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise DataError(f"{self.path}: not a BERT WordPiece vocabulary: no {', '.join(missing)} token")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[t] for t in SPECIAL_TOKENS)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._load()

    def __repr__(self) -> str:
        return f"WordPieceVocabulary({self.path!r})"

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def fingerprint(self) -> str:
        """A short hash of what decides the ids (normalization, pre-tokenization, the WordPiece vocabulary; not the
        path, nor the file it came from: a directory's tokenizer.json and its vocab.txt agree), which a run
        records."""
        definition = json.loads(self.tokenizer.to_str())
        decides = {part: definition.get(part) for part in ("normalizer", "pre_tokenizer", "model")}
        return hashlib.sha256(json.dumps(decides, sort_keys=True).encode("utf-8")).hexdigest()[:12]

    @property
    def eos_id(self) -> int:
        """``[SEP]``: what the pipeline appends to a feature that ends with EOS."""
        return self.sep_id

    def vocab_info(self):
        """For BERT's masked LM: ``[MASK]``; ``[PAD]``, ``[CLS]``, ``[SEP]`` and ``[MASK]`` never selected nor drawn
        as a random replacement, which is any other id, ``[UNK]`` too (Hugging Face's collator draws from the whole
        vocabulary). No sentinels: the objectives that mark spans with them refuse it."""
        from t5x_lite.data.objectives.encodings import VocabInfo

        return VocabInfo(vocab_size=self.vocab_size, num_extra_ids=0, num_reserved_ids=0, mask_id=self.mask_id,
                         special_ids=(self.pad_id, self.cls_id, self.sep_id, self.mask_id))

    def _pieces(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        """``[CLS]`` and the text's pieces (the closing ``[SEP]`` is the EOS the pipeline appends)."""
        return [self.cls_id] + self._pieces([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [[self.cls_id] + ids for ids in self._pieces(texts)]

    def encode_documents(self, texts: Sequence[str]) -> list[list[int]]:
        """Pretraining documents as Hugging Face's ``run_mlm.py`` tokenizes them before concatenating:
        ``[CLS] text [SEP]`` each."""
        return [[self.cls_id] + ids + [self.sep_id] for ids in self._pieces(texts)]

    def encode_pair(self, first: str, second: str) -> tuple[list[int], int]:
        """``([CLS] first [SEP] second, where second starts)``; the pipeline cuts and closes it."""
        a, b = self._pieces([first, second])
        ids = [self.cls_id, *a, self.sep_id, *b]
        return ids, len(a) + 2

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` without ``[CLS]`` and padding; a pair's texts joined by `` [SEP] ``."""
        array = np.asarray(ids if hasattr(ids, "__len__") else list(ids)).astype(np.int64).reshape(-1)
        array = np.where((array >= 0) & (array < self.vocab_size), array, self.unk_id)
        segments, run = [], []
        for i in array.tolist():
            if i == self.sep_id:
                segments.append(run)
                run = []
            elif i not in (self.pad_id, self.cls_id):
                run.append(i)
        segments.append(run)
        texts = [self.tokenizer.decode(s) for s in segments if s]
        return " [SEP] ".join(t for t in texts if t)

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(row) for row in batch]


def _load_tokenizer(path: Path):
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer

    directory = path if path.is_dir() else path.parent
    if path.is_dir():
        path = next((path / n for n in ("tokenizer.json", "vocab.txt") if (path / n).exists()), path / "vocab.txt")
    if not path.exists():
        raise DataError(f"{path}: no such file (a WordPiece vocabulary is a tokenizer.json or a vocab.txt, or a "
                        "directory holding one)")
    try:
        if path.name.endswith(".json"):
            tokenizer = Tokenizer.from_file(str(path))
        else:
            tokenizer = BertWordPieceTokenizer(str(path), **_normalization(directory))._tokenizer
    except Exception as e:  # noqa: BLE001  (tokenizers' messages name neither the file nor the problem's place)
        raise DataError(f"{path}: cannot load a WordPiece tokenizer: {e}") from e
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _normalization(directory: Path) -> dict:
    """BertTokenizer's text normalization from ``tokenizer_config.json`` beside a ``vocab.txt`` (its defaults, as
    transformers', where the file does not say: lowercase, accents stripped when lowercasing, CJK split)."""
    config, settings = directory / "tokenizer_config.json", {}
    if config.exists():
        try:
            settings = json.loads(config.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{config}: not valid JSON ({e})") from e
    return {"lowercase": bool(settings.get("do_lower_case", True)), "strip_accents": settings.get("strip_accents"),
            "handle_chinese_chars": bool(settings.get("tokenize_chinese_chars", True))}
