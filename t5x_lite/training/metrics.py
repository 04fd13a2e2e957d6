"""Training metrics: TensorBoard + JSONL writer, progress display, throughput timer.

- ``MetricsWriter`` writes scalar dicts per step as TensorBoard events (tensorboardX,
  imported lazily; without it the writer warns once and writes JSONL only) and as
  lines of ``log_dir/metrics.jsonl``::

      {"step": 100, "time": 1764150000.12, "loss": 2.31, "learning_rate": 0.01}

  ``time`` is Unix time (seconds). Each line is flushed as it is written. A restarted
  run appends to the same file and leaves what the crashed run wrote in place, so a
  step at or after the resume step can appear more than once: **readers take the
  last occurrence of a step** (``read_metrics_jsonl`` does). Lines are strict JSON:
  a non-finite value (NaN, inf) is written as ``null``.
- ``StepTimer`` measures steps/s and tokens/s over a window of recent steps, leaving
  out the first (compiling) step.
- ``ProgressBar`` wraps tqdm on a terminal; in CI or when its stream is not a TTY it
  prints one compact line every N steps instead.
- ``summarize_metrics`` averages the per-step device metrics of a logging window.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
import time
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

import jax
import numpy as np

_warned_no_tensorboardx = False


def _to_scalar(name: str, value: Any) -> float | int:
    """A Python float (or int, for integer/bool values) from a scalar: Python, NumPy or jax."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"metric {name!r} is not a scalar (shape {arr.shape})")
    if arr.dtype.kind in "biu":
        return int(arr.reshape(()))
    return float(arr.reshape(()))


def _json_value(v: float | int) -> float | int | None:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def summarize_metrics(metrics: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Average each metric over the per-step dicts of a logging window (an unweighted mean per key).

    Values may be jax arrays (fetched from the devices in one transfer), NumPy or Python
    scalars. A key missing from some steps is averaged over the steps that have it.
    """
    host = jax.device_get(list(metrics))
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for step_metrics in host:
        for k, v in step_metrics.items():
            sums[k] = sums.get(k, 0.0) + float(np.asarray(v))
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


def read_metrics_jsonl(path: str) -> list[dict]:
    """The lines of a metrics.jsonl, one per step (the last occurrence wins), in step order.

    A line that does not parse (a write cut short by a crash) is skipped.
    """
    by_step: dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "step" in record:
                by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


class MetricsWriter:
    """Scalar metrics to TensorBoard event files and to ``log_dir/<jsonl_name>``.

    ``write(step, metrics)`` writes when ``step % every_n_steps == 0`` (or ``force=True``,
    e.g. for evaluation results) and returns whether it wrote. ``resume_step`` (the step a
    restarted run resumes from) is passed to TensorBoard as ``purge_step``, so TensorBoard
    hides the crashed run's events at and after it; the JSONL keeps them (see module doc).
    ``enabled=False`` makes a writer that writes nothing (non-zero hosts of a multi-host run).
    """

    def __init__(
        self,
        log_dir: str,
        *,
        every_n_steps: int = 1,
        use_tensorboard: bool = True,
        jsonl_name: str = "metrics.jsonl",
        resume_step: Optional[int] = None,
        enabled: bool = True,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.log_dir = log_dir
        self.every_n_steps = every_n_steps
        self.enabled = enabled
        self.jsonl_path = os.path.join(log_dir, jsonl_name)
        self._tb = None
        self._jsonl: Optional[TextIO] = None
        if not enabled:
            return
        os.makedirs(log_dir, exist_ok=True)
        if use_tensorboard:
            self._tb = self._open_tensorboard(log_dir, resume_step)
        needs_newline = False
        if os.path.exists(self.jsonl_path) and os.path.getsize(self.jsonl_path) > 0:
            with open(self.jsonl_path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"  # a crash cut the last line short
        self._jsonl = open(self.jsonl_path, "a")
        if needs_newline:
            self._jsonl.write("\n")
            self._jsonl.flush()

    @staticmethod
    def _open_tensorboard(log_dir: str, resume_step: Optional[int]):
        global _warned_no_tensorboardx
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            if not _warned_no_tensorboardx:
                warnings.warn(
                    "tensorboardX is not installed: metrics go to metrics.jsonl only (pip install tensorboardX)",
                    stacklevel=3,
                )
                _warned_no_tensorboardx = True
            return None
        return SummaryWriter(logdir=log_dir, purge_step=resume_step, flush_secs=30)

    @property
    def has_tensorboard(self) -> bool:
        return self._tb is not None

    def should_write(self, step: int) -> bool:
        return self.enabled and step % self.every_n_steps == 0

    def write(self, step: int, metrics: Mapping[str, Any], *, force: bool = False) -> bool:
        """Write scalar ``metrics`` for ``step``; see the class doc for when. Returns whether it wrote."""
        if not self.enabled or self._jsonl is None or not (force or step % self.every_n_steps == 0):
            return False
        step = int(step)
        values = {k: _to_scalar(k, v) for k, v in jax.device_get(dict(metrics)).items()}
        if "step" in values or "time" in values:
            raise ValueError("metric names 'step' and 'time' are reserved")
        now = time.time()
        if self._tb is not None:
            for k, v in values.items():
                if math.isfinite(float(v)):  # a gap in the curve, not tensorboardX's warning per value
                    self._tb.add_scalar(k, float(v), global_step=step, walltime=now)
            self._tb.flush()
        record = {"step": step, "time": now, **{k: _json_value(v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self._jsonl.flush()
        return True

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()
        if self._jsonl is not None:
            self._jsonl.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StepTimer:
    """Steps/s and tokens/s over the last ``window`` intervals between ``mark`` calls.

    Call ``mark(step, num_tokens)`` after a step has finished on the device (block on
    its outputs first: jax dispatches asynchronously), with ``num_tokens`` the tokens
    processed since the previous mark. The first mark only starts the clock, so the
    first step (which includes compilation) never counts. ``reset()`` does the same
    after a pause that is not training (evaluation, a checkpoint save).
    """

    def __init__(self, window: int = 100, clock: Callable[[], float] = time.perf_counter):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._clock = clock
        self._intervals: collections.deque = collections.deque(maxlen=window)  # (seconds, steps, tokens)
        self._last: Optional[tuple[float, int]] = None

    def reset(self) -> None:
        """Forget the reference point: the next mark starts the clock again (kept intervals remain)."""
        self._last = None

    def mark(self, step: int, num_tokens: int = 0) -> None:
        now = self._clock()
        if self._last is not None:
            last_time, last_step = self._last
            if step > last_step:
                self._intervals.append((now - last_time, step - last_step, num_tokens))
        self._last = (now, step)

    def summary(self) -> dict[str, float]:
        """{'steps_per_s', 'tokens_per_s', 'step_time_s'} over the window; NaN before two marks."""
        seconds = sum(i[0] for i in self._intervals)
        steps = sum(i[1] for i in self._intervals)
        tokens = sum(i[2] for i in self._intervals)
        if steps == 0 or seconds <= 0:
            nan = float("nan")
            return {"steps_per_s": nan, "tokens_per_s": nan, "step_time_s": nan}
        return {"steps_per_s": steps / seconds, "tokens_per_s": tokens / seconds, "step_time_s": seconds / steps}


def _format_number(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.2f}M"
    if ax >= 1e4:
        return f"{x / 1e3:.1f}k"
    if ax != 0 and ax < 1e-2:
        return f"{x:.2e}"
    return f"{x:.4g}"


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# (metric name, label): what ProgressBar shows; a "train/" prefix on the name is accepted too.
_DISPLAY = (("loss", "loss"), ("tokens_per_s", "tok/s"), ("learning_rate", "lr"))


class ProgressBar:
    """Training progress: a tqdm bar on a terminal, else a compact line every ``print_every`` steps.

    ``disable=None`` decides by itself: plain lines when the ``CI`` environment variable is
    true or ``file`` (default stderr) is not a TTY. ``update(step, metrics)`` shows the
    metrics 'loss', 'tokens_per_s' and 'learning_rate' (or 'lr'), when present.
    """

    def __init__(
        self,
        total_steps: int,
        initial_step: int = 0,
        *,
        print_every: int = 100,
        file: Optional[TextIO] = None,
        disable: Optional[bool] = None,
    ):
        if print_every < 1:
            raise ValueError(f"print_every must be >= 1, got {print_every}")
        self.total_steps = total_steps
        self.initial_step = initial_step
        self.print_every = print_every
        self._file = file if file is not None else sys.stderr
        if disable is None:
            in_ci = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
            isatty = getattr(self._file, "isatty", None)
            disable = in_ci or not (isatty is not None and isatty())
        self.plain = disable
        self._start = time.perf_counter()
        self._bar = None
        if not self.plain:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps, initial=initial_step, file=self._file, unit="step", dynamic_ncols=True
            )

    @staticmethod
    def _postfix(metrics: Mapping[str, Any]) -> str:
        parts = []
        for name, label in _DISPLAY:
            candidates = (name, f"train/{name}") + (("lr", "train/lr") if name == "learning_rate" else ())
            for key in candidates:
                if key in metrics:
                    parts.append(f"{label} {_format_number(float(np.asarray(metrics[key])))}")
                    break
        return " ".join(parts)

    def update(self, step: int, metrics: Optional[Mapping[str, Any]] = None) -> None:
        """Progress is now at ``step`` (absolute, not an increment), with the latest ``metrics``."""
        metrics = metrics or {}
        if self._bar is not None:
            if metrics:
                self._bar.set_postfix_str(self._postfix(metrics), refresh=False)
            self._bar.update(step - self._bar.n)
            return
        if step % self.print_every != 0 and step != self.total_steps:
            return
        elapsed = time.perf_counter() - self._start
        done = step - self.initial_step
        line = f"step {step}/{self.total_steps}"
        postfix = self._postfix(metrics)
        if postfix:
            line += " | " + postfix
        line += f" | {_format_duration(elapsed)}"
        if done > 0 and step < self.total_steps:
            line += f" eta {_format_duration(elapsed / done * (self.total_steps - step))}"
        print(line, file=self._file, flush=True)

    def write(self, message: str) -> None:
        """A line of its own (e.g. evaluation results) without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self._file)
        else:
            print(message, file=self._file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
