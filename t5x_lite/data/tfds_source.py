"""TFDS as a random-access source; ``tensorflow_datasets`` is imported on first use only.

Random access goes through ``tfds.data_source`` (ArrayRecord files) when the
dataset was prepared in that format, else the split is read into memory with
``tfds.as_numpy(tfds.load(...))``. Records are plain Python (see ``_to_python``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from t5x_lite.data.sources import DataError, PathLike, Source, _fields_tuple, _select, log  # noqa: F401


def _to_python(value: Any) -> Any:
    """TFDS values as plain Python: bytes -> str, scalars -> int/float, string arrays -> lists."""
    if isinstance(value, Mapping):
        return {k: _to_python(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [_to_python(v) for v in value.tolist()]
        if value.ndim == 0:
            return value.item()
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    return value


class TfdsSource(Source):
    """A TFDS split, random access; records are plain Python (see ``_to_python``).

    ``random_access``:

    - ``"auto"`` (default): ``tfds.data_source`` (ArrayRecord files, read
      lazily, no TensorFlow needed to read them) when the dataset was prepared
      in a random-access format, else the ``"memory"`` path.
    - ``"data_source"``: only ``tfds.data_source``.
    - ``"memory"``: ``tfds.as_numpy(tfds.load(...))`` read fully into memory
      (imports TensorFlow; fine for GLUE-sized splits, not for C4).

    ``download`` (default False) lets TFDS download and prepare a missing
    dataset; off, a missing one is an error instead of a surprise download.
    Nothing is imported or opened until the source is first used; a pickled
    copy (a grain worker) re-opens the dataset itself, except for in-memory
    records, which travel with it.
    """

    def __init__(self, name: str, split: str, data_dir: Optional[PathLike] = None,
                 fields: Optional[Sequence[str]] = None, *, random_access: str = "auto",
                 download: bool = False) -> None:
        super().__init__()
        if random_access not in ("auto", "data_source", "memory"):
            raise ValueError(f"random_access must be auto, data_source or memory; got {random_access!r}")
        self.name, self.split = name, split
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self.fields = _fields_tuple(fields)
        self.random_access, self.download = random_access, download
        self.description = f"tfds:{name}/{split}"
        self._backend: Optional[Sequence[Any]] = None
        self.mode: Optional[str] = None  # "data_source" or "memory", once loaded

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.mode == "data_source":
            state["_backend"], state["mode"] = None, None
        return state

    def _load(self) -> Sequence[Any]:
        if self._backend is not None:
            return self._backend
        import tensorflow_datasets as tfds  # lazy: TensorFlow only when a TFDS source is used

        first_error: Optional[Exception] = None
        if self.random_access in ("auto", "data_source"):
            try:
                self._backend = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir,
                                                 download=self.download)
                self.mode = "data_source"
                return self._backend
            # Not prepared as ArrayRecord (KeyError: not prepared at all; tfds.load below then says why).
            except (NotImplementedError, ValueError, KeyError) as e:
                if self.random_access == "data_source":
                    raise DataError(f"tfds.data_source failed ({e}); prepare the dataset as ArrayRecord: tfds build "
                                    f"{self.name} --file_format=array_record", path=self.description) from e
                first_error = e
                log.info("%s: no random-access files (%s); loading the split into memory", self.description, e)
        try:
            dataset = tfds.load(self.name, split=self.split, data_dir=self.data_dir, download=self.download)
            self._backend = list(tfds.as_numpy(dataset))
        except Exception as e:
            raise DataError(f"cannot load ({e})", path=self.description) from (first_error or e)
        self.mode = "memory"
        return self._backend

    def __len__(self) -> int:
        return len(self._load())

    def _get(self, index: int) -> dict[str, Any]:
        example = self._load()[index]
        if not isinstance(example, Mapping):
            raise DataError(f"expected a dict of features, got {type(example).__name__}",
                            path=self._origin(index))
        record, missing = _select(example, self.fields)
        if missing is not None:
            raise DataError(f"no feature {missing!r} (has {sorted(example)})", path=self._origin(index),
                            field=missing)
        return _to_python(record)

    def _origin(self, index: int) -> str:
        return f"{self.description}[{index}]"
