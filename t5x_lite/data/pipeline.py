"""The input pipeline: grain, deterministic for a seed, sharded per host, resumable.

    records --preprocess/tokenize--> (pretraining: concat + chunk + objective)
      --shard(process)--> shuffle(seed) --> repeat --> trim + EOS
      --> [pack (grain first-fit) | pad] --> batch(global / processes) --> converter

Every random choice is a function of (seed, position in the stream), so the
iterator's ``get_state()`` (a small dict, saved in every checkpoint) and
``set_state()`` resume at exactly the next batch.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
import numbers
from typing import Any, Callable, Mapping, Optional

import grain
import numpy as np

from t5x_lite.data.features import (
    BOOKKEEPING_SUFFIXES,
    EVAL_FIELDS_KEY,
    PAIR_START_SUFFIX,
    TOKEN_TYPES_SUFFIX,
    DecoderOnlyFeatureConverter,
    TruncationStats,
    concat_for_decoder_only,
    pad_to,
    trim_and_append_eos,
)
from t5x_lite.data.sources import DataError
from t5x_lite.data.tasks import Mixture, Task, get_task_or_mixture, split_names

log = logging.getLogger(__name__)

_NONE: Mapping[str, tuple[Callable, Any]] = {}  # no fields besides the token features pass through
_REQUIRED = object()  # a passthrough field every example must carry


def _passthrough(converter) -> dict[str, tuple[Callable, Any]]:
    """The fields besides the token features that reach ``converter``: name -> (its check of a value, the value
    of one an example leaves out, or ``_REQUIRED``)."""
    defaults = getattr(converter, "passthrough_defaults", {})
    return {name: (check, defaults.get(name, _REQUIRED))
            for name, check in getattr(converter, "passthrough_fields", {}).items()}


def process_shard() -> tuple[int, int]:
    import jax

    return jax.process_index(), jax.process_count()


# ------------------------------------------------------------------ tokenization


def _preprocessed(task: Task, source, index: int, record: Mapping[str, Any]) -> Optional[dict]:
    """The task's preprocessors applied to one record (None: dropped); a failure names file:line."""
    example: Optional[dict] = dict(record)
    for fn in task.preprocessors:
        try:
            example = fn(example)
        except DataError:
            raise
        except Exception as e:  # a user's preprocessor: say which record it failed on
            raise DataError(f"{source.origin(index)}: task {task.name!r}'s preprocessor "
                            f"{getattr(fn, '__name__', fn)!s} failed: {type(e).__name__}: {e}") from e
        if example is None:
            return None
        if not isinstance(example, Mapping):
            raise DataError(f"{source.origin(index)}: task {task.name!r}'s preprocessor "
                            f"{getattr(fn, '__name__', fn)!s} returned a {type(example).__name__}, not a dict")
    return dict(example)


def _token_ids(value: Any, feature, where: Callable[[], str]) -> np.ndarray:
    """Text, encoded; or ids given as a list, checked: past the vocabulary XLA would read garbage.

    ``where()`` names the record for an error (built only then: this runs for every record).
    """
    if isinstance(value, str):
        if not value.strip() and feature.required:
            raise DataError(f"{where()} is empty")
        ids = np.asarray(feature.vocabulary.encode(value), np.int32)
        if ids.size == 0 and feature.required:
            raise DataError(f"{where()} encodes to no tokens ({value!r})")
        return ids
    ids = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    size = getattr(feature.vocabulary, "vocab_size", None)
    whole = ids is not None and ids.ndim == 1 and (
        ids.size == 0 or np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool
        or (np.issubdtype(ids.dtype, np.floating) and bool(np.all(ids == np.round(ids)))))  # 0/1 weights
    if not whole:
        raise DataError(f"{where()} must be text or a list of token ids, got {value!r:.80}")
    if ids.size == 0 and feature.required:
        raise DataError(f"{where()} is an empty list of token ids")
    if ids.size and (ids.min() < 0 or (size is not None and ids.max() >= size)):
        raise DataError(f"{where()} holds token id {int(ids.min() if ids.min() < 0 else ids.max())}, outside "
                        f"the vocabulary's [0, {size})")
    return ids.astype(np.int32)


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _pair_ids(value: tuple[str, str], feature, origin: str, task: str, key: str) -> tuple[np.ndarray, np.int32]:
    encode_pair = getattr(feature.vocabulary, "encode_pair", None)
    if encode_pair is None:
        raise DataError(f"{origin}: {key!r} in task {task!r} is a pair of texts, which "
                        f"{type(feature.vocabulary).__name__} cannot join (a WordPieceVocabulary can)")
    if feature.required and not (value[0].strip() or value[1].strip()):  # one empty text is [CLS] a [SEP] [SEP]
        raise DataError(f"{origin}: {key!r} in task {task!r} is a pair of empty texts")
    ids, second = encode_pair(*value)
    return np.asarray(ids, np.int32), np.int32(second)


def _tokenize_record(task: Task, source, index: int, record: Mapping[str, Any],
                     passthrough: Mapping[str, tuple[Callable, Any]] = _NONE, keep_text: bool = False,
                     pairs: bool = False) -> Optional[dict]:
    """Preprocess one record and tokenize its text features; errors name file:line.

    Of the other fields only ``passthrough`` (what the converter reads, such as a
    classifier's ``label``: name -> (check, the value of one left out, or ``_REQUIRED``))
    is kept: a field some records lack would fail at batching.
    ``keep_text`` adds each text feature as it was before tokenizing, as
    ``<feature>_pretokenized`` (seqio's name), for metrics to score against, and
    the task's ``eval_fields`` as one JSON text (``EVAL_FIELDS_KEY``).
    """
    example = _preprocessed(task, source, index, record)
    if example is None:
        return None
    out = {}
    for key, feature in task.output_features.items():
        if key not in example:
            if feature.required:
                raise DataError(f"{source.origin(index)}: task {task.name!r} produced no {key!r} feature "
                                f"(record keys: {sorted(example)})")
            continue
        value = example[key]
        if _is_pair(value):  # BERT's two segments: the vocabulary joins them, trimming cuts the longer first
            if not pairs:
                raise DataError(f"{source.origin(index)}: {key!r} in task {task.name!r} is a pair of texts, which "
                                "only a BERT classifier (type_vocab_size >= 2) reads")
            out[key], out[key + PAIR_START_SUFFIX] = _pair_ids(value, feature, source.origin(index), task.name, key)
            continue
        out[key] = _token_ids(value, feature,
                              lambda: f"{source.origin(index)}: {key!r} in task {task.name!r}")  # noqa: B023
        if keep_text and isinstance(example[key], str):
            out[f"{key}_pretokenized"] = example[key]
    if keep_text and task.eval_fields:
        out[EVAL_FIELDS_KEY] = _eval_fields_json(task, example, lambda: source.origin(index))
    for key, (problem, default) in passthrough.items():
        if key not in example:
            if default is not _REQUIRED:
                out[key] = np.asarray(default)
                continue
            raise DataError(f"{source.origin(index)}: task {task.name!r} produced no {key!r} field, which the model "
                            f"reads (record keys: {sorted(example)})")
        wrong = problem(example[key])
        if wrong:
            raise DataError(f"{source.origin(index)}: {key!r} in task {task.name!r} {wrong}")
        out[key] = np.asarray(example[key])
    return out


def _eval_fields_json(task: Task, example: Mapping[str, Any], origin: Callable[[], str]) -> str:
    missing = [f for f in task.eval_fields if f not in example]
    if missing:
        raise DataError(f"{origin()}: task {task.name!r} produced no {missing[0]!r} field, which it keeps for "
                        f"evaluation (eval_fields; record keys: {sorted(example)})")
    try:
        return json.dumps({f: example[f] for f in task.eval_fields}, default=_json_value)
    except (TypeError, ValueError) as e:
        raise DataError(f"{origin()}: task {task.name!r}: an eval field is not JSON: {e}") from e


def _json_value(value: Any) -> Any:
    """NumPy scalars and arrays (what TFDS records hold) as plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r}")


_TOKEN_CACHE: dict[tuple[str, str], tuple[Task, "_Corpus"]] = {}


def _concatenated_tokens(task: Task, split: str) -> "_Corpus":
    """All documents of a pretraining split tokenized and concatenated (T5 adds no separator).

    Cached per process: tokenizing the bundled corpus takes seconds, and every
    objective of a sweep reads the same tokens.
    """
    key = (task.name, split)
    cached = _TOKEN_CACHE.get(key)
    if cached is None or cached[0] is not task:  # the same object, not just its name (or a reused id)
        _TOKEN_CACHE[key] = cached = (task, _tokenize_corpus(task, split))
    return cached[1]


def _document_text(task: Task, source, index: int) -> Optional[str]:
    """A pretraining document's text after the task's preprocessors (None: dropped by one)."""
    example = _preprocessed(task, source, index, source[index])
    if example is None:
        return None
    text = example.get(task.text_field)
    if not isinstance(text, str):
        raise DataError(f"{source.origin(index)}: task {task.name!r} needs text in field {task.text_field!r}, "
                        f"got {'nothing' if text is None else type(text).__name__} (record keys: {sorted(example)})")
    return text


def _tokenize_corpus(task: Task, split: str) -> "_Corpus":
    source = task.source(split)
    counts = TruncationStats()
    counter = _RecordCounter(task, split, source, len(source), counts)
    texts = [text for i in range(len(source))
             if (text := counter.read(i, functools.partial(_document_text, task, source, i))) is not None]
    if not texts:  # an empty source (a split that loses every document raised in the counter)
        raise DataError(f"task {task.name!r} split {split!r}: no documents ({source.description})")
    dropped = sum(counts.dropped_examples.values())
    skipped = sum(counts.skipped_examples.values())
    if dropped or skipped:
        log.info("task %r split %r: of %d documents, its preprocessors dropped %d and %d were skipped as bad",
                 task.name, split, len(source), dropped, skipped)
    pieces = _encode_documents(task.vocabulary, texts)
    return _Corpus(np.concatenate([np.asarray(p, np.int32) for p in pieces]), dropped, skipped)


def _encode_documents(vocabulary, texts: list[str]) -> list:
    """Pretraining documents as ids: a vocabulary with ``encode_documents`` frames them (WordPiece: ``[CLS] text
    [SEP]``); T5's are their pieces alone, concatenated without a separator."""
    encode = getattr(vocabulary, "encode_documents", None)
    return encode(texts) if encode is not None else vocabulary.encode_batch(texts)


@dataclasses.dataclass(frozen=True)
class _Corpus:
    """A split's documents, tokenized and concatenated, and how many were dropped or skipped."""

    tokens: np.ndarray
    dropped: int
    skipped: int


def bound_objective(task: Task, lengths: Mapping[str, int]):
    """The task's objective for these feature lengths (UL2's mixture is sized per length)."""
    for_lengths = getattr(task.objective, "for_lengths", None)
    return for_lengths(dict(lengths)) if for_lengths is not None else task.objective


def _raw_length(task: Task, lengths: Mapping[str, int]) -> int:
    """Tokens of text one pretraining example corrupts."""
    try:
        objective = bound_objective(task, lengths)
        raw = objective.required_raw_length(dict(lengths))
    except ValueError as e:  # lengths the objective cannot fill (UL2 sizes its denoisers on binding)
        raise DataError(f"task {task.name!r}, feature lengths {dict(lengths)}: {e}") from e
    name = getattr(objective, "name", type(objective).__name__)
    if raw < 1:
        raise DataError(f"task {task.name!r}: feature lengths {dict(lengths)} are too short for objective "
                        f"{name!r} (no text fits)")
    inputs = lengths.get("inputs", 0)
    capped = raw == lengths.get("targets", 0) - 1 and "inputs" in getattr(objective, "features", ("inputs",))
    if capped and raw + 1 < inputs / 2 and (task.name, inputs, raw) not in _PADDING_NOTED:
        # Full-text targets cap the text at the targets length (T5's BERT-style, MASS-style, deshuffling):
        # with 512 / 114 most of every encoder row would be padding, computed and thrown away.
        _PADDING_NOTED.add((task.name, inputs, raw))
        log.warning("task %r: objective %r takes %d text tokens per example, so at most %d of the %d 'inputs' "
                    "positions hold text and the rest is padding. An objective whose targets hold the whole text "
                    "cuts it to fit them: give the targets the inputs' length, e.g. TASK_FEATURE_LENGTHS = "
                    "{'inputs': %d, 'targets': %d}", task.name, name, raw, raw + 1, inputs, inputs, inputs)
    return raw


_PADDING_NOTED: set = set()  # (task, inputs length, raw length) already warned about, once per process


def has_split(task: Task, split: str) -> bool:
    """Whether the task's declared splits hold ``split`` (a TFDS expression: ``"train[:10%]+validation"``); a task
    that declares none leaves it to its source."""
    return not task.splits or all(part in task.splits for part in split_names(split))


def _check_split(task: Task, split: str) -> None:
    if not has_split(task, split):
        raise DataError(f"task {task.name!r} has no split {split!r}; its splits are {', '.join(task.splits)}")


def _host_order(ds: grain.MapDataset, shard: tuple[int, int], seed: int, shuffle: bool, repeat: bool
                ) -> grain.MapDataset:
    """This host's share of ``ds`` (every ``count``-th element), shuffled per epoch, repeated."""
    index, count = shard
    if count > 1:
        ds = ds[index::count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if repeat:
        ds = ds.repeat(None)
    return ds


def _streamed_pieces(task: Task, split: str, lengths: Mapping[str, int], *, shard: tuple[int, int], seed: int,
                     shuffle: bool, repeat: bool, stats: TruncationStats) -> grain.IterDataset:
    """Pieces of ``raw`` tokens from documents tokenized as they are read (``Task.streaming``).

    T5's ``reduce_concat_tokens`` + ``split_tokens``, as grain's concat-then-split:
    this host's documents, shuffled, tokenized, concatenated without a separator
    and cut into pieces, a document's tail carried into the next piece. Nothing
    is tokenized up front, so a corpus of any size (C4) starts at once; the
    iterator's state (saved in checkpoints) holds the position and the piece
    being cut. A final partial piece (no ``repeat``) is dropped, as in memory.
    """
    _check_split(task, split)
    raw = _raw_length(task, lengths)
    source = task.source(split)
    n = len(source)
    if n == 0:
        raise DataError(f"task {task.name!r} split {split!r}: the source is empty ({source.description})")
    index, count = shard
    counter = _RecordCounter(task, split, source, len(range(index, n, count)), stats)
    vocabulary = task.vocabulary

    def tokens(i: int) -> Optional[dict]:
        text = _document_text(task, source, i)
        return None if text is None else {"targets": np.asarray(_encode_documents(vocabulary, [text])[0], np.int32)}

    def document(i) -> Optional[dict]:
        # an empty document has nothing to concatenate, and a corpus of them must still stop
        return counter.read(int(i), functools.partial(tokens, int(i)), usable=lambda doc: doc["targets"].size > 0)

    ids = _host_order(grain.MapDataset.range(n), shard, seed, shuffle, repeat)  # source positions: errors
    documents = ids.map(document).filter(lambda doc: doc is not None).to_iter_dataset()
    pieces = _RestorableFromJson(grain.experimental.ConcatThenSplitIterDataset(documents,
                                                                               length_struct={"targets": raw}))
    pieces = pieces.filter(lambda piece: bool(piece["targets_segment_ids"][-1])).map(lambda piece: piece["targets"])
    if shuffle:  # a long document's pieces come out in a row: spread them, as seqio's shuffle buffer does
        pieces = grain.experimental.WindowShuffleIterDataset(pieces, window_size=STREAM_SHUFFLE_WINDOW, seed=seed)
    return pieces


STREAM_SHUFFLE_WINDOW = 1000  # pieces; seqio's default shuffle buffer


class _RestorableFromJson(grain.IterDataset):
    """grain's concat-then-split, restorable from a state that went through JSON (a checkpoint).

    Its state keeps the cut of the document in progress as tuples and marks "none"
    with ``(-1, -1)``; JSON gives lists back, which that test misreads, and the
    resumed stream would lose a document.
    """

    def __iter__(self):
        return _TupleSlices(self._parent.__iter__())


class _TupleSlices(grain.DatasetIterator):
    def __next__(self):
        return next(self._parent)

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        slices = {key: tuple(cut) for key, cut in state["remainder_slices"].items()}
        self._parent.set_state({**state, "remainder_slices": slices})


def _pretraining_pieces(task: Task, split: str, lengths: Mapping[str, int], stats: TruncationStats
                        ) -> grain.MapDataset:
    corpus = _concatenated_tokens(task, split)
    stats.record_dropped(task.name, corpus.dropped)  # once per dataset: the corpus is read once
    stats.record_skipped(task.name, corpus.skipped)
    tokens = corpus.tokens
    raw = _raw_length(task, lengths)
    n = tokens.shape[0] // raw
    if n == 0:
        raise DataError(f"task {task.name!r} split {split!r}: {tokens.shape[0]} tokens, fewer than one "
                        f"piece of {raw} tokens")
    return grain.MapDataset.range(n).map(lambda i: tokens[i * raw: (i + 1) * raw])


class _RecordCounter:
    """Counts the records a task's preprocessors drop or its ``on_error="skip"`` skips, and stops a split
    that keeps none of them.

    Under ``repeat`` grain would otherwise look for a kept record forever. The
    preprocessors see only the record, so a record dropped once is dropped every
    epoch: once each of the ``expected`` records this host reads has been
    dropped or skipped and none kept, no example will ever come.
    """

    def __init__(self, task: Task, split: str, source, expected: int, stats: TruncationStats):
        self._task, self._split, self._source, self._stats = task, split, source, stats
        self._expected = expected
        self._kept_any = False
        self._lost: set[int] = set()  # distinct records; emptied once one is kept
        self._warned = False
        self._why: dict[str, int] = {}  # how many distinct records were lost each way, for the error

    def read(self, index: int, produce: Callable[[], Any], usable: Callable[[Any], bool] = lambda _: True) -> Any:
        """``produce()``'s record, or None, counted: dropped by a preprocessor (``produce`` returned None),
        skipped as bad (it raised a ``DataError`` under ``on_error="skip"``) or not ``usable``."""
        try:
            result = produce()
        except DataError as e:
            if self._task.on_error != "skip":
                raise
            self.skipped(index, e)
            return None
        if result is not None and not usable(result):
            self.empty(index)
            return None
        return self.kept(index, result)

    def kept(self, index: int, example: Optional[dict]) -> Optional[dict]:
        """``example`` as it is; None (dropped by a preprocessor) is counted."""
        if example is not None:
            if not self._kept_any:
                self._kept_any, self._lost = True, set()
            return example
        self._stats.record_dropped(self._task.name)
        self._lose(index, "dropped by its preprocessors")
        return None

    def skipped(self, index: int, error: DataError) -> None:
        self._stats.record_skipped(self._task.name)
        if not self._warned:
            self._warned = True
            log.warning("task %r: skipping records that cannot be used (on_error='skip'); the first: %s",
                        self._task.name, error)
        self._lose(index, "skipped as bad (on_error='skip')")

    def empty(self, index: int) -> None:
        """A document that tokenizes to nothing: not counted, but it keeps no record either."""
        self._lose(index, "empty once tokenized")

    def _lose(self, index: int, why: str) -> None:
        if self._kept_any or index in self._lost:
            return
        self._lost.add(index)
        self._why[why] = self._why.get(why, 0) + 1
        if len(self._lost) < self._expected:
            return
        where = f"task {self._task.name!r} split {self._split!r}"
        if set(self._why) == {"dropped by its preprocessors"}:
            raise DataError(f"{where}: its preprocessors dropped every one of the {self._expected} records read "
                            f"({self._source.description})")
        raise DataError(f"{where}: none of the {self._expected} records read ({self._source.description}) can be "
                        "used: " + ", ".join(f"{n} {why}" for why, n in sorted(self._why.items())))


def _examples(task: Task, split: str, lengths: Mapping[str, int], shard: tuple[int, int] = (0, 1),
              stats: Optional[TruncationStats] = None, passthrough: Mapping[str, tuple[Callable, Any]] = _NONE,
              keep_text: bool = False, pairs: bool = False) -> grain.MapDataset:
    """Tokenized examples before corruption (pretraining) or as they are (everything else)."""
    _check_split(task, split)
    if task.objective is not None:
        return _pretraining_pieces(task, split, lengths, stats if stats is not None else TruncationStats())
    source = task.source(split)
    n = len(source)
    if n == 0:
        raise DataError(f"task {task.name!r} split {split!r}: the source is empty ({source.description})")
    index, count = shard
    counter = _RecordCounter(task, split, source, len(range(index, n, count)),
                             stats if stats is not None else TruncationStats())

    def tokenized(i: int, record) -> Optional[dict]:
        i %= n  # grain's index counts on past the end once the dataset repeats
        return counter.read(i, lambda: _tokenize_record(task, source, i, record, passthrough, keep_text, pairs))

    return grain.MapDataset.source(source).map_with_index(tokenized).filter(lambda ex: ex is not None)


# ---------------------------------------------------------------------- the graph


def _task_dataset(task: Task, split: str, lengths, trim_lengths, *, seed: int, shuffle: bool, repeat: bool,
                  shard: tuple[int, int], stats: TruncationStats,
                  passthrough: Mapping[str, tuple[Callable, Any]] = _NONE, keep_text: bool = False,
                  count_cut: bool = False, pairs: bool = False
                  ) -> grain.MapDataset | grain.IterDataset:
    if task.streaming:
        if task.objective is None:
            raise DataError(f"task {task.name!r}: streaming is for pretraining tasks (it has no objective)")
        ds = _streamed_pieces(task, split, lengths, shard=shard, seed=seed, shuffle=shuffle, repeat=repeat,
                              stats=stats)
    else:
        ds = _host_order(_examples(task, split, lengths, shard, stats, passthrough, keep_text, pairs), shard, seed,
                         shuffle, repeat)
    if task.objective is not None:
        objective = bound_objective(task, lengths)
        ds = ds.random_map(lambda piece, rng: objective(piece, rng), seed=seed)
    add_eos = {k: f.add_eos for k, f in task.output_features.items()}
    eos = task.vocabulary.eos_id
    return ds.map(lambda ex: trim_and_append_eos(ex, trim_lengths, add_eos, eos, stats, count_cut))


def checked_feature_lengths(feature_lengths: Any, converter, *, warn_unread: bool = True) -> dict[str, int]:
    """``feature_lengths`` as a dict of positive (Python) ints with every key the model's converter reads;
    ``warn_unread`` warns about a length it does not read (train and eval/infer check once; ``get_dataset``,
    which they call, does not repeat the warning)."""
    shown = f"feature_lengths (TASK_FEATURE_LENGTHS) {feature_lengths!r}"
    if not isinstance(feature_lengths, Mapping):
        raise DataError(f"{shown} must be a dict such as {{'inputs': 512, 'targets': 114}}")
    lengths = dict(feature_lengths)
    known = _length_keys(converter)
    for key, value in lengths.items():
        if key not in known:  # a typo would otherwise leave that feature at its default, or unnamed
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
            raise DataError(f"{shown}: unknown feature {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                                   f"; the features are {', '.join(known)}"))
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise DataError(f"{shown}: the length of {key!r} must be a positive int, got {value!r}")
    lengths = {str(key): int(value) for key, value in lengths.items()}  # numpy ints too; JSON-ready
    try:
        read = converter.trim_lengths(lengths)
        converter.task_lengths(read)
    except KeyError as e:
        raise DataError(f"{shown} has no length for {e.args[0]!r}, which {type(converter).__name__} needs") from e
    for key in (lengths if warn_unread else ()):
        if key not in read:
            log.warning("%s: %s does not read %r; that length is ignored", shown, type(converter).__name__, key)
    return lengths


_FEATURE_NAMES = ("inputs", "targets")  # what feature_lengths may size; converters derive the rest


def _length_keys(converter) -> tuple[str, ...]:
    """The features TASK_FEATURE_LENGTHS may size: a converter of one's own may declare more (``length_keys``)."""
    return tuple(getattr(converter, "length_keys", _FEATURE_NAMES))


def _check_features(task: Task, trim_lengths: Mapping[str, int], converter, beside: set[str] = frozenset(),
                    absent: str = "ignore") -> None:
    """The task must make the features the model reads (a classification task has no targets, span corruption
    no MLM labels or class labels), and every text feature it makes that the model would read needs a length
    (a decoder-only model given only a targets length would otherwise meet whole, uncut inputs).

    ``beside``: the features the other tasks of its mixture make. A feature the task leaves out as optional is
    padding in its rows unless one of them makes it; ``absent`` says what then: "ignore", "warn" or "error".
    """
    model = getattr(converter, "model_kind", type(converter).__name__)
    head = getattr(converter, "num_labels", None) if getattr(converter, "classification", False) else None
    if head is not None and task.num_labels is not None and head != task.num_labels:
        said = "a regression target" if task.num_labels == 1 else f"{task.num_labels} classes"
        raise DataError(f"task {task.name!r} has {said}, and the classifier's head has BertConfig.num_labels = "
                        f"{head}: set it to {task.num_labels}")
    if task.objective is None:
        for name in trim_lengths:
            if name not in task.output_features:
                raise DataError(f"task {task.name!r} has no {name!r} feature (it has "
                                f"{', '.join(task.output_features)}), which {model} reads: use a task made for "
                                "this kind of model")
        _check_sized(f"task {task.name!r}", [n for n, f in task.output_features.items() if f.required],
                     trim_lengths, converter)
        return
    makes = getattr(task.objective, "features", None)
    if makes is None:  # a custom objective that does not say
        return
    objective = f"task {task.name!r}: objective {getattr(task.objective, 'name', type(task.objective).__name__)!r}"
    hint = f"use an objective made for it ({getattr(converter, 'pretraining_objectives', 'see the README')})"
    # A feature both the task and the model take as optional may be absent: an LM task's inputs on a decoder-only
    # model, not on an encoder, which would read nothing.
    optional = {name for name, f in task.output_features.items()
                if not f.required and name in getattr(converter, "optional_features", ())}
    missing = [name for name in trim_lengths if name not in makes and name not in optional]
    missing += [name for name, (_, default) in _passthrough(converter).items()  # a label
                if name not in makes and default is _REQUIRED]
    if missing:
        try:  # a length given for a feature the model reads only when it has one (a decoder-only LM's inputs)
            rest = {k: v for k, v in trim_lengths.items() if k not in missing}
            converter.task_lengths(rest)
            if set(missing) <= set(_length_keys(converter)) and set(makes) <= set(converter.trim_lengths(rest)):
                hint = f"drop {', '.join(map(repr, missing))} from TASK_FEATURE_LENGTHS"
        except KeyError:
            pass
        raise DataError(f"{objective} makes {', '.join(makes)}, not the {', '.join(missing)} that {model} reads: "
                        f"{hint}")
    unread = [name for name in makes if name not in trim_lengths and name not in _length_keys(converter)]
    if unread:  # MLM labels for a classifier
        raise DataError(f"{objective} makes {', '.join(unread)}, which {model} does not read: {hint}")
    for name in optional & set(trim_lengths) - set(makes) - set(beside):
        message = (f"{objective} makes no {name}, so the {trim_lengths[name]} {name!r} positions of every row it "
                   f"fills are padding: drop {name!r} from TASK_FEATURE_LENGTHS if nothing else needs it, or mix "
                   f"the task with one that has {name}")
        if absent == "error":
            raise DataError(message)
        if absent == "warn":
            log.warning(message)
    _check_sized(objective, makes, trim_lengths, converter)


def _makes(task: Task) -> set[str]:
    features = getattr(task.objective, "features", None) if task.objective is not None else None
    if features is not None:
        return set(features)
    return {name for name, f in task.output_features.items() if f.required}


def _check_sized(what: str, makes, trim_lengths: Mapping[str, int], converter) -> None:
    """A text feature the converter would read if it had a length (a prefix LM's inputs) must have one."""
    known = _length_keys(converter)
    unsized = [name for name in makes if name in known and name not in trim_lengths
               and name in converter.trim_lengths({**trim_lengths, name: 1})]
    if unsized:
        example = ", ".join(f"'{k}': {max(trim_lengths.values())}" for k in known
                            if k in trim_lengths or k in unsized)
        raise DataError(f"{what} makes {', '.join(unsized)}, which TASK_FEATURE_LENGTHS gives no length "
                        f"(it has {', '.join(trim_lengths)}): add one, e.g. {{{example}}}")


def check_task_fits(task_or_mixture: str | Task | Mixture, feature_lengths: Mapping[str, int], converter, *,
                    absent: str = "ignore") -> None:
    """Every task makes what the model reads, at lengths it has (``get_dataset`` checks this before reading data;
    eval and train's ``eval_task`` before loading anything).

    A task that leaves out an optional feature the lengths size (an LM task's inputs on a decoder-only model) is
    fine in a mixture with a task that makes it; alone, that feature is padding in every row, and ``absent``
    says what to do about it: "ignore" (``get_dataset``), "warn" or "error" (train, where it costs steps).
    """
    tasks = _tasks_of(task_or_mixture)
    trim = converter.trim_lengths(feature_lengths)
    for task in tasks:
        made = set().union(*(_makes(t) for t in tasks if t is not task))
        _check_features(task, trim, converter, made, absent)


def _tasks_of(item: str | Task | Mixture) -> list[Task]:
    item = get_task_or_mixture(item) if isinstance(item, str) else item
    return [task for task, _ in item.resolved()] if isinstance(item, Mixture) else [item]


def check_vocabulary_fits(task_or_mixture: str | Task | Mixture, model_vocab_size: int) -> None:
    """Every task's token ids must index the model's embedding table (past it, XLA reads garbage, no error)."""
    for task in _tasks_of(task_or_mixture):
        size = getattr(task.vocabulary, "vocab_size", None)  # a custom vocabulary may not say
        if size is not None and size > model_vocab_size:
            raise DataError(f"task {task.name!r} has {size} token ids, more than the model's vocab_size "
                            f"{model_vocab_size}")


def describe_tokenizer(task_or_mixture: str | Task | Mixture) -> str:
    """What turns the task's text into ids, as a run records it (``"WordPieceVocabulary, 30522 ids, sha256
    1f2e3d4c5b6a"``): the class, size and a hash of the contents, not a path, so that a moved checkpoint still
    matches and another tokenizer does not."""
    described = []
    for task in _tasks_of(task_or_mixture):
        vocabulary = task.vocabulary
        size, fingerprint = getattr(vocabulary, "vocab_size", None), getattr(vocabulary, "fingerprint", None)
        text = (type(vocabulary).__name__ + (f", {size} ids" if size is not None else "")
                + (f", sha256 {fingerprint}" if fingerprint is not None else ""))
        if text not in described:
            described.append(text)
    return " + ".join(described)


def get_dataset(
    task_or_mixture: str | Task | Mixture,
    *,
    split: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    converter,
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = True,
    pack: bool = False,
    shard: Optional[tuple[int, int]] = None,
    drop_remainder: Optional[bool] = None,
    keep_text: bool = False,
    count_cut: bool = False,
    absent: str = "ignore",
) -> tuple[grain.IterDataset, TruncationStats]:
    """A batched ``grain.IterDataset`` of model features for this host, plus truncation stats.

    ``batch_size`` is the global batch; each of the ``shard[1]`` hosts gets an
    equal slice of the examples and builds ``batch_size / hosts`` rows.
    ``keep_text`` (not with ``pack``) adds ``inputs_pretokenized`` and
    ``targets_pretokenized``: the text before tokenizing and truncation, which
    evaluation scores against as seqio does. ``count_cut`` (not with ``pack``)
    adds ``<feature>_tokens_cut``, the tokens truncation took from each row's
    example, so a reader that stops early (evaluation's ``max_examples``) counts
    only the rows it used; the stats count every example read, read-ahead too.
    ``absent``: what to do about a task whose rows leave a sized feature empty
    (``check_task_fits``), checked with the rest before any data is read.
    """
    if (keep_text or count_cut) and pack:
        raise ValueError("get_dataset: keep_text and count_cut need pack=False (a packed row holds several "
                         "examples)")
    item = get_task_or_mixture(task_or_mixture) if isinstance(task_or_mixture, str) else task_or_mixture
    index, count = shard if shard is not None else process_shard()
    if batch_size % count:
        raise DataError(f"batch_size {batch_size} is not divisible by the {count} slices it is fed in (one per "
                        "process, or per group of processes that feed the same rows)")
    per_host = batch_size // count
    stats = TruncationStats()
    lengths = checked_feature_lengths(feature_lengths, converter, warn_unread=False)
    trim = converter.trim_lengths(lengths)
    parts = item.resolved() if isinstance(item, Mixture) else [(item, 1.0)]
    check_task_fits(item, lengths, converter, absent=absent)
    passthrough = _passthrough(converter)
    datasets = [_task_dataset(t, split, lengths, trim, seed=seed + i, shuffle=shuffle, repeat=repeat,
                              shard=(index, count), stats=stats, passthrough=passthrough, keep_text=keep_text,
                              count_cut=count_cut, pairs=getattr(converter, "reads_token_types", False))
                for i, (t, _) in enumerate(parts)]
    if not isinstance(item, Mixture):
        ds = datasets[0]
    elif all(isinstance(d, grain.MapDataset) for d in datasets):
        ds = grain.MapDataset.mix(datasets, [rate for _, rate in parts])
    else:  # a streamed task has no length to index: mix the streams
        streams = {t.name: d if isinstance(d, grain.IterDataset) else d.to_iter_dataset()
                   for (t, _), d in zip(parts, datasets)}
        ds = grain.IterDataset.mix(streams, {t.name: rate for t, rate in parts})
    ds = ds.map(functools.partial(_prepare_for_converter, converter=converter))
    packed_lengths = converter.task_lengths(lengths)
    iter_ds = ds.to_iter_dataset() if isinstance(ds, grain.MapDataset) else ds
    if pack:
        iter_ds = grain.experimental.FirstFitPackIterDataset(
            iter_ds, length_struct=packed_lengths, num_packing_bins=max(per_host, 1), seed=seed,
            shuffle_bins=shuffle,
        )
    else:
        iter_ds = iter_ds.map(functools.partial(_pad_example, lengths=packed_lengths))
    if drop_remainder is None:
        drop_remainder = repeat
    iter_ds = iter_ds.batch(per_host, drop_remainder=drop_remainder)
    iter_ds = iter_ds.map(functools.partial(_convert, converter=converter) if keep_text or count_cut else converter)
    return iter_ds, stats


def _convert(batch: Mapping[str, Any], converter) -> dict:
    """The converter's features plus the text and cut counts it does not read."""
    return {**converter(batch), **{k: v for k, v in batch.items() if k.endswith(BOOKKEEPING_SUFFIXES)}}


def _prepare_for_converter(example: dict, converter) -> dict:
    """Decoder-only converters read one concatenated sequence; build it before packing."""
    if isinstance(converter, DecoderOnlyFeatureConverter):
        kept = {k: v for k, v in example.items() if k.endswith(BOOKKEEPING_SUFFIXES)}
        return {**concat_for_decoder_only(example, converter.loss_on_targets_only), **kept}
    return example


def _pad_example(example: Mapping[str, Any], lengths: Mapping[str, int]) -> dict:
    out = {}
    for key, value in example.items():
        if key in lengths:
            out[key] = pad_to(value, lengths[key])
        else:
            out[key] = value
    for key, length in lengths.items():  # one text is all type 0: its rows then batch beside a pair task's
        if key.endswith(TOKEN_TYPES_SUFFIX) and key not in out and key[:-len(TOKEN_TYPES_SUFFIX)] in out:
            out[key] = np.zeros(length, np.int32)
    return out
