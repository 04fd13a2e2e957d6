"""The GLUE and SuperGLUE leaderboards' submission files, from test-split predictions.

GLUE (gluebenchmark.com) takes a zip of one TSV per task, ``index<TAB>prediction``
with a header line: CoLA, SST-2, MRPC, QQP and WNLI as class ids (1: acceptable,
positive, equivalent, duplicate, entailment), STS-B as a score in [0, 5], MNLI
(``MNLI-m`` / ``MNLI-mm``, the matched and mismatched test sets), QNLI, RTE and the
diagnostic AX as label names. SuperGLUE (super.gluebenchmark.com) takes a zip of one
JSONL per task, ``{"idx": ..., "label": ...}``: BoolQ and WiC ``"true"`` /
``"false"``, CB, RTE, AX-b and AX-g label names, COPA 0 / 1 (choice1 / choice2), WSC
``"True"`` / ``"False"`` (is the candidate the pronoun's referent), ReCoRD the
entity's text keyed by the query's idx, and MultiRC one line per paragraph,
``{"idx": p, "passage": {"questions": [{"idx": q, "answers": [{"idx": a, "label":
0 / 1}]}]}}``. The file names are the leaderboards' (``CoLA.tsv``, ``BoolQ.jsonl``...).

A T5 model's prediction is read through its task's postprocessor, as evaluation
reads it; a BERT classifier's (a ``_classification`` task's) is already the class id,
or for ReCoRD the entity's text.
A prediction that names no label (an untrained model's) still needs a line: it is
written as the first label (STS-B: 0), and counted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import zipfile
from collections import abc
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from t5x_lite.data.sources import DataError
from t5x_lite.errors import ConfigError, check_types
from t5x_lite.evaluation.evaluate import DecodeOptions, _labeller, predict, resolve_task
from t5x_lite.tasks.tfds_tasks import label_names

log = logging.getLogger(__name__)


# How a file writes a label: the class id, the label's name (lower-cased), a score in [0, 5], WSC's "True" /
# "False", MultiRC's 0 / 1 nested by paragraph and question, or the predicted text.
FORMS = ("index", "name", "lowercase", "score", "referent", "multirc", "text")


@dataclasses.dataclass(frozen=True)
class LeaderboardFile:
    """One file of a submission: its name, the text-to-text task and split it predicts, and how a label is
    written (``FORMS``)."""

    name: str
    task: str
    split: str
    form: str

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"{self.name}: form {self.form!r} is not one of {', '.join(FORMS)}")


def _file(name: str, task: str, form: str, split: str = "test") -> LeaderboardFile:
    return LeaderboardFile(name, task, split, form)


BENCHMARKS: dict[str, tuple[LeaderboardFile, ...]] = {
    "glue": (
        _file("CoLA.tsv", "glue_cola", "index"),
        _file("SST-2.tsv", "glue_sst2", "index"),
        _file("MRPC.tsv", "glue_mrpc", "index"),
        _file("STS-B.tsv", "glue_stsb", "score"),
        _file("QQP.tsv", "glue_qqp", "index"),
        _file("MNLI-m.tsv", "glue_mnli", "name", "test_matched"),
        _file("MNLI-mm.tsv", "glue_mnli", "name", "test_mismatched"),
        _file("QNLI.tsv", "glue_qnli", "name"),
        _file("RTE.tsv", "glue_rte", "name"),
        _file("WNLI.tsv", "glue_wnli", "index"),
        _file("AX.tsv", "glue_ax", "name"),
    ),
    "super_glue": (
        _file("BoolQ.jsonl", "super_glue_boolq", "lowercase"),
        _file("CB.jsonl", "super_glue_cb", "name"),
        _file("COPA.jsonl", "super_glue_copa", "index"),
        _file("MultiRC.jsonl", "super_glue_multirc", "multirc"),
        _file("ReCoRD.jsonl", "super_glue_record", "text"),
        _file("RTE.jsonl", "super_glue_rte", "name"),
        _file("WiC.jsonl", "super_glue_wic", "lowercase"),
        _file("WSC.jsonl", "super_glue_wsc", "referent"),
        _file("AX-b.jsonl", "super_glue_axb", "name"),
        _file("AX-g.jsonl", "super_glue_axg", "name"),
    ),
}



def _label(file: LeaderboardFile, value: Any) -> tuple[Any, bool]:
    """(what the file says for a postprocessed prediction, whether the prediction was readable)."""
    if file.form == "text":
        return str(value), True
    if file.form == "score":
        readable = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
        return (min(max(float(value), 0.0), 5.0) if readable else 0.0), readable
    names = label_names(file.task)
    classes = 2 if file.form in ("referent", "multirc") else len(names)
    readable = isinstance(value, int) and 0 <= value < classes
    value = value if readable else 0
    if file.form == "name":
        return names[value], readable
    if file.form == "lowercase":
        return names[value].lower(), readable
    if file.form == "referent":
        return ("False", "True")[value], readable
    return value, readable  # index, multirc


def _row_value(row: Mapping[str, Any], read: Optional[Callable]) -> Any:
    """A row's prediction as its task's postprocessor reads it; a classifier's class id (or score) as it is."""
    prediction = row["prediction"]
    if isinstance(prediction, str) and read is not None:
        prediction = read(row, False)
    return int(prediction) if isinstance(prediction, (bool, int, np.integer)) else prediction


def _idx(row: Mapping[str, Any], file: LeaderboardFile) -> Any:
    try:
        return row["example"]["idx"]
    except (KeyError, TypeError):
        raise ConfigError(f"{file.name}: a prediction of {file.task!r} has no idx (rows must come from predict on "
                          f"a task that keeps it, as t5x_lite infer writes them): {dict(row)!r:.200}") from None


def write_file(file: LeaderboardFile, rows: Sequence[Mapping[str, Any]], directory: Union[str, Path],
               task: Optional[str] = None) -> dict:
    """Write one leaderboard file from a split's prediction rows (as ``predict`` returns them, or as ``t5x_lite
    infer`` writes them) of ``task`` (default: the file's); {"path", "lines", "unreadable"}. Rows are written in
    ``idx`` order; two rows with one ``idx`` are an error."""
    text = any(isinstance(r["prediction"], str) for r in rows)
    read = _labeller(resolve_task(task or file.task)) if text else None
    unreadable = 0
    entries = []
    for row in rows:
        value, readable = _label(file, _row_value(row, read))
        unreadable += not readable
        entries.append((_idx(row, file), value))
    if file.form == "multirc":
        lines = _multirc_lines(file, entries)
    else:
        if file.form == "text":  # ReCoRD: one answer per query, keyed by the query's idx
            entries = [(idx["query"] if isinstance(idx, Mapping) else idx, value) for idx, value in entries]
        entries.sort(key=lambda e: e[0])
        _check_unique(file, [idx for idx, _ in entries])
        if file.name.endswith(".tsv"):
            lines = ["index\tprediction"] + [f"{idx}\t{value:.3f}" if file.form == "score" else f"{idx}\t{value}"
                                              for idx, value in entries]
        else:
            lines = [json.dumps({"idx": idx, "label": value}) for idx, value in entries]
    path = Path(directory) / file.name
    path.write_text("\n".join(lines) + "\n")
    if unreadable:
        log.warning("%s: %d of the %d predictions name no label; written as %r", file.name, unreadable, len(rows),
                    _label(file, None)[0])
    return {"path": str(path), "lines": len(lines), "unreadable": unreadable}


def _multirc_lines(file: LeaderboardFile, entries: list) -> list[str]:
    """One line per paragraph, its questions and each question's answers in idx order."""
    paragraphs: dict[int, dict[int, list]] = {}
    for idx, label in entries:
        paragraphs.setdefault(int(idx["paragraph"]), {}).setdefault(int(idx["question"]), []).append(
            (int(idx["answer"]), label))
    lines = []
    for p, questions in sorted(paragraphs.items()):
        out = []
        for q, answers in sorted(questions.items()):
            answers.sort()
            _check_unique(file, [f"paragraph {p} question {q} answer {a}" for a, _ in answers])
            out.append({"idx": q, "answers": [{"idx": a, "label": label} for a, label in answers]})
        lines.append(json.dumps({"idx": p, "passage": {"questions": out}}))
    return lines


def _check_unique(file: LeaderboardFile, keys: Sequence[Any]) -> None:
    seen = set()
    for key in keys:
        if key in seen:
            raise ConfigError(f"{file.name}: two predictions of {file.task!r} split {file.split!r} have idx {key}; "
                              "each test example must be predicted once")
        seen.add(key)


WNLI_TASKS = ("glue_wnli", "glue_wnli_simple")


def leaderboard_files(benchmark: str, tasks: Optional[Sequence[str]] = None, wnli_task: str = "glue_wnli"
                      ) -> tuple[LeaderboardFile, ...]:
    """The benchmark's files, or those of ``tasks`` (text-to-text task names, ``glue_mnli`` ...) among them;
    GLUE's WNLI predicted by ``wnli_task``: ``glue_wnli``, or ``glue_wnli_simple``, WNLI read as WSC (T5's way: its
    GLUE mixture has no WNLI, and a model trained on SuperGLUE's WSC answers it)."""
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"benchmark {benchmark!r} has no leaderboard files here; it is one of "
                          f"{', '.join(BENCHMARKS)}")
    if wnli_task not in WNLI_TASKS:
        raise ConfigError(f"wnli_task must be one of {', '.join(WNLI_TASKS)}, got {wnli_task!r}")
    files = tuple(dataclasses.replace(f, task=wnli_task) if f.task == "glue_wnli" else f
                  for f in BENCHMARKS[benchmark])
    if tasks is None:
        return files
    known = {f.task for f in files}
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ConfigError(f"{benchmark} has no leaderboard file for {unknown[0]!r}; its tasks are "
                          f"{', '.join(sorted(known))}")
    return tuple(f for f in files if f.task in tasks)


def submit_checkpoint(
    *,
    checkpoint: Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike]]],
    benchmark: str,
    feature_lengths: Mapping[str, int],
    batch_size: int = 32,
    decode: DecodeOptions = DecodeOptions(),
    tasks: Optional[Sequence[str]] = None,
    wnli_task: str = "glue_wnli",
    max_examples: Optional[int] = None,
    output_dir: Optional[Union[str, os.PathLike]] = None,
    overwrite: bool = False,
) -> dict:
    """Predict each of a benchmark's test splits with a checkpoint and write the leaderboard's files and their zip.

    ``checkpoint`` is one checkpoint for every task (fine-tuned on T5's mixture), or a mapping from each task
    (``glue_cola`` ...) to its own (fine-tuned task by task; a BERT classifier always is, its head sized to the
    task's classes). A BERT classifier predicts the task's ``_classification`` variant (ReCoRD's answers
    each query with its likeliest candidate). ``tasks`` restricts the submission to some of the tasks, for a
    partial check: the leaderboard expects every file. ``wnli_task="glue_wnli_simple"`` predicts WNLI as T5 did,
    read as WSC (give it the checkpoint trained on SuperGLUE, whose WSC examples taught it the format). The files
    and ``<benchmark>.zip`` go to ``output_dir``, by default ``CHECKPOINT/submission`` (a training run's
    ``MODEL_DIR/submission``, with the step in the names), numbered past an earlier submission there unless
    ``overwrite``. Returns {"zip", "files": {name: {"path", "lines", "unreadable"}}, "missing"}.
    """
    from t5x_lite.evaluation.run import _check_model, _check_settings, _output_paths
    from t5x_lite.training import checkpoints

    per_task = isinstance(checkpoint, abc.Mapping)
    check_types("submit_checkpoint", checkpoint=(checkpoint, (str, os.PathLike, abc.Mapping)),
                benchmark=(benchmark, str), tasks=(tasks, (abc.Sequence, type(None))), wnli_task=(wnli_task, str))
    if isinstance(tasks, str):
        raise ConfigError(f"submit_checkpoint.tasks must be a list of task names, got the string {tasks!r}")
    files = leaderboard_files(benchmark, tasks, wnli_task)
    if per_task:
        if output_dir is None:
            raise ConfigError("submit_checkpoint: with a checkpoint per task, give output_dir")
        known = {f.task for f in leaderboard_files(benchmark, wnli_task=wnli_task)}
        for task, path in checkpoint.items():
            if task not in known:
                hint = (f" (WNLI.tsv is predicted by {wnli_task!r}: wnli_task)" if task in WNLI_TASKS else "")
                raise ConfigError(f"submit_checkpoint.checkpoint names {task!r}, which has no {benchmark} leaderboard "
                                  f"file{hint}; its tasks are {', '.join(sorted(known))}")
            check_types("submit_checkpoint", **{f"checkpoint[{task!r}]": (path, (str, os.PathLike))})
        missing = sorted({f.task for f in files} - set(checkpoint))
        if missing:
            raise ConfigError(f"submit_checkpoint.checkpoint has no checkpoint for {', '.join(missing)} (give one "
                              "per task, or restrict tasks)")
    elif benchmark == "glue" and wnli_task == "glue_wnli_simple":
        log.warning("WNLI read as WSC is answered by the same checkpoint as GLUE's other tasks; T5 answered it with "
                    "the checkpoint trained on SuperGLUE's WSC (give a dict, with glue_wnli_simple mapped to that)")
    checkpoint_of = (lambda task: os.fspath(checkpoint[task])) if per_task else (lambda task: os.fspath(checkpoint))
    for f in files:
        _check_settings("submit_checkpoint", checkpoint_of(f.task), f.task, feature_lengths, batch_size, max_examples,
                        output_dir)
    models = {}
    for f in files:  # every model checked against its tasks before any params load
        path = checkpoint_of(f.task)
        if path not in models:
            models[path] = checkpoints.load_model(path)
        _check_model(models[path], path, _task_for(models[path], f, path), "decode", feature_lengths, decode)
    loaded: dict[str, tuple] = {}

    def restored(path: str) -> tuple:
        if path not in loaded:
            loaded.clear()  # one model's params in memory at a time
            loaded[path] = checkpoints.load_params_and_step(path)
        return loaded[path]

    anchor = checkpoint_of(files[0].task)
    step = None if per_task else restored(anchor)[2]  # a training run's newest readable step names the files
    (zip_path,) = _output_paths(anchor, step, output_dir, overwrite, "submission", f"{benchmark}.zip")
    directory = zip_path.with_suffix("")
    # Files are written aside and moved in only once all are: a failed run leaves an earlier submission whole.
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    order = list(models)  # restored() holds one checkpoint's params at a time: each is loaded once, for its files
    written = {}
    try:
        for f in sorted(files, key=lambda f: order.index(checkpoint_of(f.task))):
            path = checkpoint_of(f.task)
            model, params, _ = restored(path)
            task = _task_for(model, f, path)
            counts: dict = {}
            rows = predict(model=model, params=params, task=task, split=f.split, feature_lengths=feature_lengths,
                           batch_size=batch_size, decode=decode, max_examples=max_examples, counts=counts)
            _check_complete(f, task, counts)
            written[f.name] = write_file(f, rows, staging, task)
            log.info("%s: %d lines from %s split %r", f.name, written[f.name]["lines"], task, f.split)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not overwrite:
            zip_path.unlink(missing_ok=True)  # this run's empty placeholder, not a submission
        raise
    directory.mkdir(exist_ok=True)
    for info in written.values():
        moved = directory / Path(info["path"]).name
        os.replace(info["path"], moved)
        info["path"] = str(moved)
    staging.rmdir()
    written = {f.name: written[f.name] for f in files}  # the leaderboard's order, in the zip and the result
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, info in written.items():
            z.write(info["path"], arcname=name)
    missing = [f.name for f in BENCHMARKS[benchmark] if f.name not in written]
    if missing:
        log.warning("%s holds %d of the %d files %s's leaderboard expects; missing: %s", zip_path, len(written),
                    len(BENCHMARKS[benchmark]), benchmark, ", ".join(missing))
    return {"zip": str(zip_path), "files": written, "missing": missing}


def _check_complete(file: LeaderboardFile, task: str, counts: Mapping[str, Any]) -> None:
    """A record dropped by a preprocessor or skipped as bad leaves its line out, and the leaderboard refuses a
    short file."""
    lost = [f"{counts[key][task]} {why}" for key, why in (("dropped_examples", "dropped by its preprocessors"),
                                                           ("skipped_examples", "skipped as bad"))
            if counts[key].get(task)]
    if lost:
        raise DataError(f"{file.name}: task {task!r} split {file.split!r} has records {' and '.join(lost)} (the "
                        "log says which); the leaderboard needs one line per test example")


def _task_for(model, file: LeaderboardFile, checkpoint: str) -> str:
    """The task a model predicts for a file: the text-to-text task, or for a BERT classifier its variant."""
    if model.kind == "decoder_only" or model.kind == "encoder_decoder":
        return file.task
    if model.kind != "encoder_only_classification":
        raise ConfigError(f"{checkpoint} holds a model of kind {model.kind}, which cannot predict {file.task!r}")
    from t5x_lite.data.tasks import TaskRegistry

    name = f"{file.task}_classification"
    if name not in TaskRegistry.names():
        raise ConfigError(f"{checkpoint} holds a BERT classifier, and {file.task!r} ({file.name}) has no "
                          "_classification variant for one (a T5 task); predict it with a T5 model")
    return name
