"""Output features, truncation, and feature converters (task features -> model features).

A task yields examples with token arrays ``inputs`` / ``targets`` (and, for
encoder-only tasks, ``mlm_targets`` / ``mlm_weights`` / ``label``). A converter
turns a padded or packed batch of those into the feature names each model
reads (t5x names: ``encoder_input_tokens``, ``decoder_target_tokens`` ...).
Packing itself is grain's ``FirstFitPackIterDataset``; it adds
``<feature>_segment_ids`` and ``<feature>_positions``.

A converter (the three below, or one of one's own) has
``trim_lengths(lengths)`` (the task features cut, and to what length, from
TASK_FEATURE_LENGTHS), ``task_lengths(lengths)`` (every array padded or packed,
and its length) and ``__call__(batch)``. It may declare ``length_keys`` (the
features TASK_FEATURE_LENGTHS may name; ``inputs`` and ``targets`` if not),
``optional_features``, ``passthrough_fields`` (fields besides the token
features that examples carry to it, each with a check of its value),
``passthrough_defaults`` (the value of such a field an example may leave out),
``reads_token_types`` and, for messages, ``model_kind`` and
``pretraining_objectives``.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, ClassVar, Mapping, Optional

import numpy as np

from t5x_lite.data.sources import DataError

PAD_ID = 0


@dataclasses.dataclass(frozen=True)
class Feature:
    """One token feature of a task: its vocabulary and whether EOS ends it."""

    vocabulary: Any
    add_eos: bool = True
    required: bool = True


class TruncationStats:
    """Counts tokens cut by truncation, per feature, and records dropped by preprocessors or skipped as bad
    (a task's ``on_error="skip"``), per task.

    In-process and thread-safe (grain maps in threads here, not processes).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.examples = 0
        self.truncated_examples: dict[str, int] = {}
        self.truncated_tokens: dict[str, int] = {}
        self.dropped_examples: dict[str, int] = {}
        self.skipped_examples: dict[str, int] = {}

    def record(self, feature: str, dropped: int) -> None:
        with self._lock:
            self.truncated_examples[feature] = self.truncated_examples.get(feature, 0) + 1
            self.truncated_tokens[feature] = self.truncated_tokens.get(feature, 0) + dropped

    def count_example(self) -> None:
        with self._lock:
            self.examples += 1

    def record_dropped(self, task: str, count: int = 1) -> None:
        if count:
            with self._lock:
                self.dropped_examples[task] = self.dropped_examples.get(task, 0) + count

    def record_skipped(self, task: str, count: int = 1) -> None:
        if count:
            with self._lock:
                self.skipped_examples[task] = self.skipped_examples.get(task, 0) + count

    def as_dict(self) -> dict:
        return {"examples": self.examples, "truncated_examples": dict(self.truncated_examples),
                "truncated_tokens": dict(self.truncated_tokens), "dropped_examples": dict(self.dropped_examples),
                "skipped_examples": dict(self.skipped_examples)}


CUT_SUFFIX = "_tokens_cut"  # per-example truncation count, beside the features (``trim_and_append_eos``)
# A pair of texts (BERT's two segments) arrives as one feature and where its second text starts; trimming turns
# that into the feature's token types, which the encoder-only converter reads.
PAIR_START_SUFFIX = "_pair_start"
TOKEN_TYPES_SUFFIX = "_token_types"
# A task's eval_fields, as one JSON text per example (a batch holds strings, not ragged lists or dicts).
EVAL_FIELDS_KEY = "eval_fields_json"
# Keys a batch carries beside the model's features (matched as suffixes): the text before tokenizing (seqio's
# name), the cut counts and the eval fields.
BOOKKEEPING_SUFFIXES = ("_pretokenized", CUT_SUFFIX, EVAL_FIELDS_KEY)


def trim_and_append_eos(
    example: Mapping[str, Any],
    lengths: Mapping[str, int],
    add_eos: Mapping[str, bool],
    eos_id: int,
    stats: Optional[TruncationStats] = None,
    count_cut: bool = False,
) -> dict:
    """Cut each token feature to its length (keeping room for EOS) and append EOS.

    Truncation is counted, never silent: ``stats`` records how many examples and
    tokens each feature lost (of those read, which a pipeline reading ahead makes
    more than those used); ``count_cut`` also writes the example's own count as
    ``<feature>_tokens_cut``, for a reader that stops early to sum what it used.
    """
    out = dict(example)
    for key, length in lengths.items():
        if count_cut:
            out[key + CUT_SUFFIX] = np.int32(0)
        if key not in example:
            continue
        tokens = np.asarray(example[key], dtype=np.int32)
        eos = bool(add_eos.get(key, False))
        room = length - int(eos)
        read = tokens.shape[0]
        if key + PAIR_START_SUFFIX in example:
            tokens, types = _trim_pair(tokens, int(out.pop(key + PAIR_START_SUFFIX)), room)
            out[key + TOKEN_TYPES_SUFFIX] = np.concatenate([types, [1]] if eos else [types]).astype(np.int32)
        else:
            tokens = tokens[:room]
        cut = read - tokens.shape[0]
        if cut:
            if stats is not None:
                stats.record(key, int(cut))
            if count_cut:
                out[key + CUT_SUFFIX] = np.int32(cut)
        if eos:
            tokens = np.concatenate([tokens, np.array([eos_id], np.int32)])
        out[key] = tokens
    if stats is not None:
        stats.count_example()
    return out


def _trim_pair(tokens: np.ndarray, second: int, room: int) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] a [SEP] b`` cut to ``room`` as Hugging Face's ``tokenizers`` cuts a pair (``longest_first``: the
    shorter text keeps what it can up to half the room; the longer, or the second of two equal ones, takes the
    rest), and its token types (0 up to the first ``[SEP]``, 1 after)."""
    if room < 2:
        raise DataError(f"a length of {room + 1} cannot hold a pair of texts: [CLS] and two [SEP] take 3 tokens")
    head, a, b = tokens[:1], tokens[1:second - 1], tokens[second:]
    budget = room - 2  # [CLS] and the middle [SEP]; the closing [SEP] is the EOS outside room
    n1, n2 = len(a), len(b)
    if n1 + n2 > budget:
        swap = n1 > n2
        if swap:
            n1, n2 = n2, n1
        n2 = n1 if n1 > budget else max(n1, budget - n1)
        if n1 + n2 > budget:
            n1 = budget // 2
            n2 = n1 + budget % 2
        if swap:
            n1, n2 = n2, n1
    a, b = a[:n1], b[:n2]
    trimmed = np.concatenate([head, a, tokens[second - 1:second], b])
    types = np.concatenate([np.zeros(len(a) + 2, np.int32), np.ones(len(b), np.int32)])
    return trimmed, types


def pad_to(tokens: np.ndarray, length: int) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.shape[0] > length:
        raise ValueError(f"sequence of length {tokens.shape[0]} exceeds feature length {length}")
    return np.pad(tokens, (0, length - tokens.shape[0]))


def shift_right(targets: np.ndarray, segment_ids: Optional[np.ndarray] = None, start_id: int = 0) -> np.ndarray:
    """Teacher-forcing inputs: targets moved one step right, ``start_id`` at each segment start."""
    targets = np.asarray(targets)
    shifted = np.concatenate([np.full(targets.shape[:-1] + (1,), start_id, targets.dtype), targets[..., :-1]], -1)
    if segment_ids is not None:
        starts = np.concatenate(
            [np.ones(segment_ids.shape[:-1] + (1,), bool), segment_ids[..., 1:] != segment_ids[..., :-1]], -1
        )
        shifted = np.where(starts, start_id, shifted)
    return shifted


def _int32(batch: Mapping[str, np.ndarray]) -> dict:
    return {k: np.asarray(v, np.int32) if np.asarray(v).dtype.kind in "iub" else np.asarray(v, np.float32)
            for k, v in batch.items()}


@dataclasses.dataclass(frozen=True)
class EncDecFeatureConverter:
    """inputs -> encoder, targets -> decoder (teacher forcing), loss on non-padding targets."""

    model_kind: ClassVar[str] = "an encoder-decoder model"
    pretraining_objectives: ClassVar[str] = "span_3_15_u_u or another T5-paper objective, prefix_lm, ul2"

    pack: bool = False
    decoder_start_id: int = 0

    def trim_lengths(self, lengths: Mapping[str, int]) -> dict:
        return {"inputs": lengths["inputs"], "targets": lengths["targets"]}

    def task_lengths(self, lengths: Mapping[str, int]) -> dict:
        return self.trim_lengths(lengths)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict:
        targets = np.asarray(batch["targets"])
        out = {
            "encoder_input_tokens": batch["inputs"],
            "decoder_target_tokens": targets,
            "decoder_loss_weights": (targets != PAD_ID).astype(np.float32),
        }
        if self.pack:
            out["encoder_segment_ids"] = batch["inputs_segment_ids"]
            out["encoder_positions"] = batch["inputs_positions"]
            out["decoder_segment_ids"] = batch["targets_segment_ids"]
            out["decoder_positions"] = batch["targets_positions"]
            out["decoder_input_tokens"] = shift_right(targets, batch["targets_segment_ids"], self.decoder_start_id)
        else:
            out["decoder_input_tokens"] = shift_right(targets, None, self.decoder_start_id)
        return _int32(out)


def concat_for_decoder_only(example: Mapping[str, Any], loss_on_targets_only: bool = True) -> dict:
    """Prefix LM: one sequence ``inputs ++ targets`` plus per-token prefix and loss masks.

    ``causal_attention`` covers the inputs and one more position, because after
    the shift the first target is predicted from the last input (t5x convention).
    """
    inputs = np.asarray(example.get("inputs", np.zeros(0, np.int32)), np.int32)
    targets = np.asarray(example["targets"], np.int32)
    n_in = inputs.shape[0]
    seq = np.concatenate([inputs, targets])
    causal = np.zeros(seq.shape[0], np.int32)
    if n_in:
        causal[: n_in + 1] = 1
    weights = np.ones(seq.shape[0], np.int32)
    if loss_on_targets_only:
        weights[:n_in] = 0
    return {"targets": seq, "causal_attention": causal, "loss_weights": weights}


@dataclasses.dataclass(frozen=True)
class DecoderOnlyFeatureConverter:
    """An LM on ``inputs ++ targets`` (loss on targets only): causal everywhere, or with ``prefix_lm`` a
    bidirectional prefix over the inputs. Without inputs (an LM objective), a causal LM on ``targets``."""

    model_kind: ClassVar[str] = "a decoder-only model"
    pretraining_objectives: ClassVar[str] = ("lm with a targets length only; prefix_lm or a T5-paper objective with "
                                             "inputs and targets lengths")
    optional_features: ClassVar[tuple[str, ...]] = ("inputs",)  # an example without them is read as targets only

    pack: bool = False
    prefix_lm: bool = True
    loss_on_targets_only: bool = True

    def trim_lengths(self, lengths: Mapping[str, int]) -> dict:
        return {k: lengths[k] for k in ("inputs", "targets") if k in lengths}

    def task_lengths(self, lengths: Mapping[str, int]) -> dict:
        # The concatenated sequence (and its two masks) takes the place of "targets". A causal LM reads the
        # inputs too, under its causal mask (the T5 paper's "LM" on a supervised task), loss on targets only.
        n = lengths["targets"] + lengths.get("inputs", 0)
        return {"targets": n, "causal_attention": n, "loss_weights": n}

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict:
        targets = np.asarray(batch["targets"])
        seg = batch.get("targets_segment_ids") if self.pack else None
        weights = np.asarray(batch["loss_weights"]) * (targets != PAD_ID)
        out = {
            "decoder_target_tokens": targets,
            "decoder_input_tokens": shift_right(targets, seg, 0),
            "decoder_loss_weights": weights.astype(np.float32),
        }
        if self.prefix_lm:
            out["decoder_causal_attention"] = batch["causal_attention"]
        if self.pack:
            out["decoder_segment_ids"] = batch["targets_segment_ids"]
            out["decoder_positions"] = batch["targets_positions"]
        return _int32(out)


def _weight_problem(value: Any) -> Optional[str]:
    weight = np.asarray(value)
    if weight.ndim != 0 or weight.dtype.kind not in "iuf" or not np.isfinite(weight) or weight < 0:
        return f"must be one finite number >= 0 (0: the row has no label), got {value!r:.80}"
    return None


@dataclasses.dataclass(frozen=True)
class EncoderOnlyFeatureConverter:
    """BERT-style: ``inputs`` -> ``input_tokens``; MLM targets/weights or a class ``label``.

    A classifier's example may also carry ``label_weight`` (default 1), which weighs its loss; 0 marks a row
    without a label (a test split's hidden one): evaluation leaves it out of the metrics and the loss and
    still predicts it.
    """

    pack: bool = False
    classification: bool = False
    num_labels: Optional[int] = None  # the classifier's classes, to check each label against; 1: regression
    type_vocab_size: int = 2  # the model's token types: a pair of texts needs two

    @property
    def model_kind(self) -> str:
        return "an encoder-only (BERT) classifier" if self.classification else "an encoder-only (BERT) model"

    @property
    def pretraining_objectives(self) -> str:
        return "none: a classifier fine-tunes on a labelled task" if self.classification else "bert_mlm"

    @property
    def passthrough_fields(self) -> dict[str, Callable[[Any], Optional[str]]]:
        """Fields besides the token features that examples must carry to the converter, each with a check
        that says what is wrong with a value (None: fine)."""
        return {"label": self._label_problem, "label_weight": _weight_problem} if self.classification else {}

    @property
    def passthrough_defaults(self) -> dict[str, Any]:
        """The passthrough fields an example may leave out, and their value then."""
        return {"label_weight": 1.0} if self.classification else {}

    @property
    def reads_token_types(self) -> bool:
        """Whether a task may give a pair of texts (BERT's ``[CLS] a [SEP] b [SEP]``, token types 0 and 1)."""
        return self.classification and self.type_vocab_size >= 2

    @property
    def regression(self) -> bool:
        return self.num_labels == 1  # Hugging Face's convention for a regression head

    def _label_problem(self, value: Any) -> Optional[str]:
        label = np.asarray(value)
        if self.regression:
            if label.ndim != 0 or not np.issubdtype(label.dtype, np.floating) or not np.isfinite(label):
                # An integer is most likely a class id meant for a classifier with num_labels > 1.
                return (f"must be one finite float (num_labels = 1 is a regression head), got {value!r:.80}; "
                        "for classes, set BertConfig.num_labels to their number")
            return None
        # A float label would be cut to an int, and one past the classes indexes the logits out of range.
        if label.ndim != 0 or not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
            return f"must be one integer class id, got {value!r:.80}"
        if int(label) < 0 or (self.num_labels is not None and int(label) >= self.num_labels):
            return f"is {int(label)}, outside the classifier's classes [0, {self.num_labels})"
        return None

    def trim_lengths(self, lengths: Mapping[str, int]) -> dict:
        out = {"inputs": lengths["inputs"]}
        if not self.classification:
            out.update(mlm_targets=lengths["inputs"], mlm_weights=lengths["inputs"])
        return out

    def task_lengths(self, lengths: Mapping[str, int]) -> dict:
        out = self.trim_lengths(lengths)
        if self.reads_token_types:  # a pair's token types (a classifier never packs, so absent ones cost nothing)
            out["inputs" + TOKEN_TYPES_SUFFIX] = lengths["inputs"]
        return out

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict:
        out = {"input_tokens": batch["inputs"]}
        if "inputs" + TOKEN_TYPES_SUFFIX in batch:
            out["token_type_ids"] = batch["inputs" + TOKEN_TYPES_SUFFIX]
        if self.classification:
            out["labels"] = np.asarray(batch["label"], np.float32 if self.regression else None).reshape(-1)
            out["label_weights"] = np.asarray(batch["label_weight"], np.float32).reshape(-1)
        else:
            out["mlm_targets"] = batch["mlm_targets"]
            out["mlm_weights"] = np.asarray(batch["mlm_weights"], np.float32)
        if self.pack:
            out["segment_ids"] = batch["inputs_segment_ids"]
            out["positions"] = batch["inputs_positions"]
        return _int32(out)
