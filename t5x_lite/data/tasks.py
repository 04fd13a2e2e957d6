"""Tasks and mixtures, registered by name so gin can refer to them.

A :class:`Task` names a source (per split), record-level preprocessors (text in,
text out), its output features (vocabulary, EOS), its metrics (by name) and the
postprocessor that turns decoded text into what the metrics compare. A task with an
``objective`` is a pretraining task: the ``text`` of all records is tokenized,
concatenated and cut into pieces of exactly the raw length the objective needs
(T5's ``reduce_concat_tokens`` + ``split_tokens``), then corrupted per piece.

Adding a task::

    TaskRegistry.add(Task(
        name="my_sentiment",
        source=lambda split: JsonlSource(f"data/{split}.jsonl", fields=("text", "label")),
        preprocessors=(lambda ex: {"inputs": "review: " + ex["text"], "targets": ex["label"]},),
        output_features={"inputs": Feature(vocab), "targets": Feature(vocab)},
    ))
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Mapping, Optional, Sequence

from t5x_lite.data.features import Feature
from t5x_lite.data.sources import DataError  # one error type for bad data, bad names and bad files


Preprocessor = Callable[[dict], Optional[dict]]  # return None to drop a record

# T5's target text for an example whose label is hidden (GLUE's and SuperGLUE's test splits): kept, so that
# inference can predict it, and left out of evaluation (its postprocessor maps it to None).
UNLABELLED_TARGET = "<unk>"


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    source: Callable[[str], Any]  # split -> random-access source (len, getitem, origin)
    output_features: Mapping[str, Feature]
    preprocessors: Sequence[Preprocessor] = ()
    objective: Optional[Any] = None  # a t5x_lite.data.objectives objective, for pretraining tasks
    text_field: str = "text"
    metric_names: Sequence[str] = ()  # names in t5x_lite.evaluation.metrics.METRICS, e.g. ("accuracy",)
    # Decoded text (the prediction, and the target text) -> what the metrics compare. Either fn(text), or seqio's
    # fn(text, example=None, is_target=False): a function with an ``example`` parameter is given the example
    # (its ``eval_fields`` and ``targets_pretokenized``) and told which of the two it is reading. A target
    # mapped to None is unlabelled: evaluation leaves that example out of its metrics and loss.
    postprocess_fn: Optional[Callable[..., Any]] = None
    # Fields of the preprocessed record that evaluation keeps beside the text (JSON values), for the
    # postprocessor's ``example`` and the predictions file: MultiRC's question id, ReCoRD's answers, WSC's label.
    eval_fields: Sequence[str] = ()
    # The split names the source knows, for an early error naming them; empty: the source decides.
    splits: Sequence[str] = ()
    # Pretraining only: tokenize documents as they are read and concatenate-then-split them (for a corpus too
    # big to tokenize up front, such as C4); the default tokenizes the split once, in memory, and shuffles pieces.
    streaming: bool = False
    # "skip": a record that fails in the preprocessors or tokenizing (an empty target, a token id past the
    # vocabulary, a missing feature) is skipped and counted instead of stopping the run.
    on_error: str = "raise"
    # A classification task's number of classes (1: a regression target), checked against a BERT classifier's
    # BertConfig.num_labels before any data is read; None: not said (checked per record against the head).
    num_labels: Optional[int] = None
    # An example the model reads as several inputs (ReCoRD's candidate entities, for a classifier): its prediction
    # rows (as ``evaluation.predict`` gives them) -> one row per example, before postprocessing, metrics and the
    # predictions file. Evaluation's ``max_examples`` and loss still count the model's inputs.
    combine_predictions: Optional[Callable[[list], list]] = None

    def __post_init__(self):
        if self.on_error not in ("raise", "skip"):
            raise DataError(f"task {self.name!r}: on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.num_labels is not None and (not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool)
                                            or self.num_labels < 1):
            raise DataError(f"task {self.name!r}: num_labels must be an int >= 1 (1: a regression target) or None, "
                            f"got {self.num_labels!r}")
        if isinstance(self.eval_fields, str) or not all(isinstance(f, str) for f in self.eval_fields):
            raise DataError(f"task {self.name!r}: eval_fields must be a sequence of field names, got "
                            f"{self.eval_fields!r}")

    @property
    def vocabulary(self):
        first = next(iter(self.output_features.values()))
        return first.vocabulary


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Tasks sampled by rate (grain's deterministic weighted interleaving)."""

    name: str
    tasks: Sequence[tuple[str, float]]
    # The tasks evaluating the mixture reads (its benchmark); None: all. T5's SuperGLUE mixture trains WSC on DPR's
    # data too, which is not a SuperGLUE task.
    evaluate_tasks: Optional[Sequence[str]] = None

    def __post_init__(self):
        # grain's messages for these name neither the mixture nor the task.
        if not self.tasks:
            raise DataError(f"mixture {self.name!r} has no tasks")
        names = []
        for entry in self.tasks:
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DataError(f"mixture {self.name!r}: each entry must be (task name, rate), got {entry!r}")
            name, rate = entry
            if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0 < float(rate) < math.inf:
                raise DataError(f"mixture {self.name!r}: task {name!r} has rate {rate!r}; rates must be positive "
                                "finite numbers")
            if name in names:  # read as two streams, its records would repeat within an epoch
                raise DataError(f"mixture {self.name!r} lists task {name!r} twice; give it one (larger) rate")
            names.append(name)
        unknown = [t for t in (self.evaluate_tasks or ()) if t not in names]
        if isinstance(self.evaluate_tasks, str) or unknown or self.evaluate_tasks == ():
            raise DataError(f"mixture {self.name!r}: evaluate_tasks must name some of its tasks ({', '.join(names)}); "
                            f"got {self.evaluate_tasks!r}")

    def resolved(self) -> list[tuple[Task, float]]:
        return [(TaskRegistry.get(name), float(rate)) for name, rate in self.tasks]

    def evaluated_tasks(self) -> list[Task]:
        """The tasks evaluating the mixture reads: ``evaluate_tasks``, or all of them."""
        chosen = self.evaluate_tasks
        return [task for task, _ in self.resolved() if chosen is None or task.name in chosen]


def split_names(split: str) -> list[str]:
    """The split names in a TFDS split expression: ``"train[:10%]+validation"`` -> ``["train", "validation"]``."""
    return [part.split("[", 1)[0].strip() for part in split.split("+")]


class _Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._factories: list[Callable[[], None]] = []
        self._loading = False

    def add(self, item, *, overwrite: bool = False):
        self.load()  # else a lazily registered (bundled, TFDS) item of that name would replace this one later
        if item.name in self._items and not overwrite:
            raise DataError(f"{self.kind} {item.name!r} is already registered")
        self._items[item.name] = item
        return item

    def add_provider(self, register_fn: Callable[[], None]) -> None:
        """A function that registers items on first lookup (keeps imports lazy)."""
        self._factories.append(register_fn)

    def load(self) -> None:
        """Run the providers that have not run yet (each registers its items once)."""
        if self._loading:  # a provider adding its items: the providers run one after another, in order
            return
        self._loading = True
        try:
            while self._factories:
                self._factories.pop(0)()
        finally:
            self._loading = False

    def get(self, name: str):
        self.load()
        if name not in self._items:
            import difflib

            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise DataError(f"unknown {self.kind} {name!r}{hint}")
        return self._items[name]

    def names(self) -> list[str]:
        self.load()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._items

    def remove(self, name: str) -> None:
        self._items.pop(name, None)


TaskRegistry = _Registry("task")
MixtureRegistry = _Registry("mixture")


def get_task_or_mixture(name: str):
    if name in MixtureRegistry:
        return MixtureRegistry.get(name)
    return TaskRegistry.get(name)
