"""Random-access record sources: local text/JSONL/TSV/CSV files and TFDS.

A *source* is the first stage of the data pipeline: a finite, indexable
sequence of examples (``dict``s). Every source here has

- ``len(source)`` and ``source[i] -> dict`` (``0 <= i < len``; negative indices
  count from the end), so it can be handed straight to grain:
  ``grain.MapDataset.source(source)``;
- ``source.origin(i) -> "path:line"`` (``"tfds:name/split[i]"`` for TFDS), to
  point an error message at the input that caused it;
- ``source.description``, one line saying what it reads;
- ``source.stats``, counters of what was skipped (blank lines, and with
  ``on_error="skip"`` the bad records: see below).

Local files (``TextLineSource``, ``JsonlSource``, ``DelimitedSource``):

- ``patterns`` is a path or glob, or a list of them; ``~`` is expanded and
  ``**`` matches recursively. Files are read in pattern order, each pattern's
  matches sorted, duplicates dropped, so record indices are deterministic.
- A name ending in ``.gz`` or ``.bz2`` is decompressed.
- Files are read **fully into memory** when the source is built (and the
  records travel with it when it is pickled to a grain worker). That is right
  for the bundled data (a few MB) and fine-tuning sets; a corpus of many GB
  wants a streaming or ArrayRecord source instead.
- Lines are split on ``"\\n"`` only (a trailing ``"\\r"`` is dropped, and a
  UTF-8 byte-order mark at the start of a file); line numbers are 1-based and
  count every line of the file, blank or not.

Bad input, with the default ``on_error="raise"``, raises one ``DataError`` (a
``ValueError``) whose message starts with ``path:line:`` and names the field
where there is one: a line that is not valid UTF-8, a line that is not a JSON
object, a missing required field, a CSV/TSV row with the wrong number of
columns, a file that holds no records (empty, only blank lines, or only a
header), a compressed file that cannot be decompressed. With
``on_error="skip"`` each such record (or file) is skipped instead and counted
in ``source.stats`` under ``skipped_<reason>``::

    skipped_invalid_utf8  skipped_bad_json  skipped_missing_field
    skipped_bad_columns   skipped_empty_files  skipped_unreadable_files

and a warning with the first such message is logged. Two things always
raise, whatever ``on_error``: a pattern that matches no file (a typo must never
silently give less data) and a source left with no records at all.

Blank lines are never records: they are counted in ``stats["blank_lines"]``.

TFDS sources live in ``tfds_source.py`` (``TfdsSource``); they import
``tensorflow_datasets`` only when first used, never at import time.
"""

from __future__ import annotations

import abc
import array
import bisect
import bz2
import csv
import glob
import gzip
import json
import logging
import operator
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from t5x_lite.errors import ConfigTypeError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Patterns = Union[PathLike, Sequence[PathLike]]

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
_ON_ERROR = ("raise", "skip")


class DataError(ValueError):
    """Bad input data. ``path``, ``line`` and ``field`` say where (``None`` if not known)."""

    def __init__(self, message: str, *, path: Optional[str] = None, line: Optional[int] = None,
                 field: Optional[str] = None):
        where = path if path is not None else ""
        if path is not None and line is not None:
            where = f"{path}:{line}"
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.line, self.field = path, line, field


# --------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------
class Source(abc.ABC):
    """A finite random-access sequence of example dicts (see the module docstring)."""

    description: str = ""

    def __init__(self) -> None:
        self.stats: dict[str, int] = {}

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def _get(self, index: int) -> dict[str, Any]:
        """The record at ``0 <= index < len(self)``."""

    @abc.abstractmethod
    def _origin(self, index: int) -> str: ...

    def _index(self, index: Any) -> int:
        i = operator.index(index)  # ints and NumPy integers; a slice or a str is a TypeError
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} records of {self.description}")
        return i

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._get(self._index(index))

    def origin(self, index: int) -> str:
        """Where record ``index`` came from: ``"path:line"`` (or ``"tfds:name/split[i]"``)."""
        return self._origin(self._index(index))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self._get(i)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class ExpandedSource(Source):
    """``base`` with each record replaced by the list ``expand(record)`` returns: none (a filter), one, or
    several. For a split whose examples are not its records one to one: ReCoRD trains on one example per
    answer, WSC only on its correct referents.

    The index is built on first use by reading every record of ``base`` once; ``origin`` names the base
    record (and which of its expansions). ``expand`` must give the same list every time it sees a record
    (it runs again on each read), and be picklable (a module-level function or a ``functools.partial`` of
    one) for grain's worker processes.
    """

    def __init__(self, base: Source, expand, what: str) -> None:
        super().__init__()
        self.base, self.expand = base, expand
        self.stats = base.stats  # what the base skipped is what this source skipped
        self.description = f"{base.description}, {what}"
        self._records: Optional[array.array] = None  # per example: its base record
        self._offsets: Optional[array.array] = None  # per example: which of the record's expansions

    def _index_map(self) -> tuple[array.array, array.array]:
        if self._records is None:
            records, offsets = array.array("q"), array.array("q")
            for i in range(len(self.base)):
                n = len(self._expanded(i))
                records.extend([i] * n)
                offsets.extend(range(n))
            self._records, self._offsets = records, offsets
        return self._records, self._offsets

    def _expanded(self, i: int) -> list:
        try:
            out = self.expand(self.base[i])
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{self.base.origin(i)}: {getattr(self.expand, '__name__', self.expand)!s} failed: "
                            f"{type(e).__name__}: {e}") from e
        if not isinstance(out, (list, tuple)):
            raise DataError(f"{self.base.origin(i)}: {getattr(self.expand, '__name__', self.expand)!s} returned a "
                            f"{type(out).__name__}, not a list of records")
        return list(out)

    def __len__(self) -> int:
        return len(self._index_map()[0])

    def _get(self, index: int) -> dict[str, Any]:
        records, offsets = self._index_map()
        return self._expanded(records[index])[offsets[index]]

    def _origin(self, index: int) -> str:
        records, offsets = self._index_map()
        i = records[index]
        several = offsets[index] > 0 or (index + 1 < len(records) and records[index + 1] == i)
        return f"{self.base.origin(i)} (its example {offsets[index] + 1})" if several else self.base.origin(i)


# --------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------
def expand_patterns(patterns: Patterns) -> list[str]:
    """The files ``patterns`` match: pattern order, each pattern's matches sorted, no duplicates.

    Raises ``DataError`` naming a pattern that matches no file.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    patterns = [os.path.expanduser(os.fspath(p)) for p in patterns]
    if not patterns:
        raise DataError("no file patterns given")
    files: list[str] = []
    # "data/a.jsonl", "./data/a.jsonl" and its absolute path are one file; a symlink is a file of its own
    # (a data set may upsample by linking).
    seen: set[str] = set()
    for pattern in patterns:
        if os.path.isfile(pattern):  # also a literal name containing glob characters
            matches = [pattern]
        else:
            matches = sorted(m for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
        if not matches:
            raise DataError(f"{pattern!r} matches no files", path=pattern)
        for m in matches:
            key = os.path.normpath(os.path.abspath(m))
            if key not in seen:
                seen.add(key)
                files.append(m)
    return files


def read_bytes(path: str) -> bytes:
    """A file's bytes, decompressed if its name ends in ``.gz`` or ``.bz2``."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".bz2"):
        return bz2.decompress(data)
    return data


def _strip_compression(path: str) -> str:
    for ext in (".gz", ".bz2"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


class _FileSource(Source):
    """Shared machinery: expand globs, read and decode files, skip or raise on bad input."""

    _kind = "files"

    def __init__(self, patterns: Patterns, *, on_error: str = "raise") -> None:
        super().__init__()
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.paths = expand_patterns(patterns)
        self.stats = {"blank_lines": 0}
        self._first_skip: Optional[str] = None
        # origin of record i: (self._file[i], self._line[i]); compact for big corpora
        self._file = array.array("i")
        self._line = array.array("i")
        for file_index, path in enumerate(self.paths):
            before = (len(self._file), self._skipped())
            try:
                lines = self._read_lines(path)
            except _Skipped:
                continue
            self._parse_file(file_index, path, lines)
            if (len(self._file), self._skipped()) == before:  # nothing kept, nothing skipped
                self._bad("empty_files", "file holds no records (only blank lines or a header)", path)
        if not len(self._file):
            raise DataError(f"no records in {self._where()} (stats: {self.stats})")
        if self._first_skip is not None:
            skipped = {k: v for k, v in self.stats.items() if k.startswith("skipped_")}
            log.warning("%s: skipped %s; first: %s", self.description, skipped, self._first_skip)

    # -- helpers for subclasses --------------------------------------------------------
    @property
    def description(self) -> str:  # type: ignore[override]
        return f"{self._kind} from {self._where()}"

    def _where(self) -> str:
        if len(self.paths) == 1:
            return self.paths[0]
        return f"{len(self.paths)} files ({self.paths[0]} ... {self.paths[-1]})"

    def _bad(self, reason: str, message: str, path: str, line: Optional[int] = None,
             field: Optional[str] = None) -> None:
        """Raise a ``DataError`` or, with ``on_error="skip"``, count ``skipped_<reason>``."""
        error = DataError(message, path=path, line=line, field=field)
        if self.on_error == "raise":
            raise error
        key = f"skipped_{reason}"
        self.stats[key] = self.stats.get(key, 0) + 1
        if self._first_skip is None:
            self._first_skip = str(error)

    def _skipped(self) -> int:
        return sum(v for k, v in self.stats.items() if k.startswith("skipped_"))

    def _add(self, file_index: int, line: int) -> None:
        self._file.append(file_index)
        self._line.append(line)

    def _origin(self, index: int) -> str:
        return f"{self.paths[self._file[index]]}:{self._line[index]}"

    def _read_lines(self, path: str) -> list[tuple[int, str]]:
        """``(line number, text)`` of every line that decodes (blank ones included)."""
        try:
            data = read_bytes(path)
        except (OSError, EOFError, zlib.error, ValueError) as e:
            self._bad("unreadable_files", f"cannot read: {e}", path)
            raise _Skipped from e
        if not data.strip():
            self._bad("empty_files", "file is empty" if not data else "file holds only whitespace", path)
            raise _Skipped
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        # Classic Mac files end lines with CR alone; anything holding a LF keeps CR as part of CRLF.
        cr_only = b"\n" not in data and b"\r" in data
        if text is not None:
            raw = text.split("\r" if cr_only else "\n")
        else:
            raw = []
            for number, line in enumerate(data.split(b"\r" if cr_only else b"\n"), start=1):
                try:
                    raw.append(line.decode("utf-8"))
                except UnicodeDecodeError as e:
                    self._bad("invalid_utf8", f"invalid UTF-8 (byte {e.start}: {line[e.start:e.start + 4]!r})",
                              path, number)
                    raw.append(None)  # type: ignore[arg-type]
        if raw and raw[-1] == "":
            raw.pop()  # the final newline ends the last line; it does not start another
        if raw and raw[0] is not None and raw[0].startswith("\ufeff"):
            raw[0] = raw[0][1:]
        return [(n, s[:-1] if s.endswith("\r") else s) for n, s in enumerate(raw, start=1) if s is not None]

    @abc.abstractmethod
    def _parse_file(self, file_index: int, path: str, lines: list[tuple[int, str]]) -> None: ...


class _Skipped(Exception):
    """A whole file was skipped (``on_error="skip"``)."""


def _select(record: Mapping[str, Any], fields: Optional[Sequence[str]]) -> tuple[dict[str, Any], Optional[str]]:
    """(record restricted to ``fields``, first missing field or None)."""
    if fields is None:
        return dict(record), None
    for f in fields:
        if f not in record:
            return {}, f
    return {f: record[f] for f in fields}, None


def _fields_tuple(fields: Optional[Sequence[str]]) -> Optional[tuple[str, ...]]:
    if fields is None:
        return None
    if isinstance(fields, str):
        raise ConfigTypeError(f"fields must be a sequence of names, not the string {fields!r}")
    fields = tuple(fields)
    if not fields or len(set(fields)) != len(fields):
        raise ValueError(f"fields must be distinct names, at least one; got {fields}")
    return fields


class TextLineSource(_FileSource):
    """Plain text: one record per non-blank line, or per blank-line-separated paragraph.

    Records are ``{field: text}``. In ``mode="line"`` the text is the line
    (without its newline); in ``mode="paragraph"`` it is the paragraph's lines
    joined with ``"\\n"`` and ``origin`` is the line it starts on. Blank lines
    (whitespace only) are counted in ``stats["blank_lines"]``.
    """

    def __init__(self, patterns: Patterns, mode: str = "line", field: str = "text", *,
                 on_error: str = "raise") -> None:
        if mode not in ("line", "paragraph"):
            raise ValueError(f"mode must be 'line' or 'paragraph', got {mode!r}")
        self.mode, self.field = mode, field
        self._kind = "text lines" if mode == "line" else "text paragraphs"
        self._texts: list[str] = []
        super().__init__(patterns, on_error=on_error)

    def _parse_file(self, file_index, path, lines):
        paragraph: list[str] = []
        start = 0
        for number, text in lines:
            if not text.strip():
                self.stats["blank_lines"] += 1
                if paragraph:
                    self._texts.append("\n".join(paragraph))
                    self._add(file_index, start)
                    paragraph = []
            elif self.mode == "line":
                self._texts.append(text)
                self._add(file_index, number)
            else:
                if not paragraph:
                    start = number
                paragraph.append(text)
        if paragraph:
            self._texts.append("\n".join(paragraph))
            self._add(file_index, start)

    def __len__(self) -> int:
        return len(self._texts)

    def _get(self, index: int) -> dict[str, Any]:
        return {self.field: self._texts[index]}


class JsonlSource(_FileSource):
    """JSON Lines: one JSON object per non-blank line.

    ``fields``: the keys every record must have; records keep only these. With
    ``None`` a record is the whole object. A line that is not a JSON object is a
    ``bad_json`` error; an object without one of ``fields`` a ``missing_field`` one.
    """

    _kind = "JSON lines"

    def __init__(self, patterns: Patterns, fields: Optional[Sequence[str]] = None, *,
                 on_error: str = "raise") -> None:
        self.fields = _fields_tuple(fields)
        self._records: list[dict[str, Any]] = []
        super().__init__(patterns, on_error=on_error)

    def _parse_file(self, file_index, path, lines):
        for number, text in lines:
            if not text.strip():
                self.stats["blank_lines"] += 1
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                self._bad("bad_json", f"invalid JSON: {e}", path, number)
                continue
            if not isinstance(obj, dict):
                self._bad("bad_json", f"expected a JSON object, got {type(obj).__name__}", path, number)
                continue
            record, missing = _select(obj, self.fields)
            if missing is not None:
                self._bad("missing_field", f"missing field {missing!r} (has {sorted(obj)})", path, number, missing)
                continue
            self._records.append(record)
            self._add(file_index, number)

    def __len__(self) -> int:
        return len(self._records)

    def _get(self, index: int) -> dict[str, Any]:
        return dict(self._records[index])


class DelimitedSource(_FileSource):
    """TSV/CSV with named columns, read with the ``csv`` module; values are strings.

    Args:
      fields: the columns to keep (each must exist); ``None`` keeps all. With
        ``header=False`` these name the columns, in order, and are required.
      delimiter: ``None`` picks it from the name: ``.tsv`` tab, ``.csv`` comma.
      header: the first row of every file names its columns.
      quoting: ``csv`` quoting mode; ``None`` is ``QUOTE_MINIMAL`` for commas
        (quoted fields may span lines) and ``QUOTE_NONE`` for tabs (TSVs such as
        GLUE's hold literal quote characters).

    Blank lines are skipped and counted; a row whose column count differs from
    the header's is a ``bad_columns`` error. ``origin`` is the row's first line.
    """

    _kind = "delimited rows"

    def __init__(self, patterns: Patterns, fields: Optional[Sequence[str]] = None,
                 delimiter: Optional[str] = None, header: bool = True, *,
                 quoting: Optional[int] = None, on_error: str = "raise") -> None:
        self.fields = _fields_tuple(fields)
        if not header and self.fields is None:
            raise ValueError("DelimitedSource(header=False) needs fields= to name the columns")
        self.delimiter, self.header, self.quoting = delimiter, header, quoting
        self._records: list[dict[str, str]] = []
        super().__init__(patterns, on_error=on_error)

    def _dialect(self, path: str) -> tuple[str, int]:
        delimiter = self.delimiter
        if delimiter is None:
            name = _strip_compression(path).lower()
            if name.endswith(".tsv"):
                delimiter = "\t"
            elif name.endswith(".csv"):
                delimiter = ","
            else:
                raise DataError("cannot tell the delimiter from the name (not .tsv/.csv); pass delimiter=",
                                path=path)
        quoting = self.quoting
        if quoting is None:
            quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        return delimiter, quoting

    def _parse_file(self, file_index, path, lines):
        delimiter, quoting = self._dialect(path)
        # csv's 128 KiB cap on a field guards against a runaway quote; the whole file is in memory anyway,
        # and a quote that never closes is caught below. (The limit is process-wide; it only ever grows.)
        longest = sum(len(text) + 1 for _, text in lines)
        if longest > csv.field_size_limit():
            csv.field_size_limit(longest)
        feed = _LineFeed(lines)
        reader = csv.reader(feed, delimiter=delimiter, quoting=quoting, strict=True)
        columns: Optional[list[str]] = None if self.header else list(self.fields)  # type: ignore[arg-type]
        while True:
            feed.row_start = None
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                start = feed.row_start or feed.current
                spanned = f" (a quoted field runs from line {start} to {feed.current})" if feed.current > start \
                    else ""
                if columns is None:  # the header: skipping it would make the first row the column names
                    raise DataError(f"malformed header: {e}{spanned}", path=path, line=start) from e
                self._bad("bad_columns", f"malformed row: {e}{spanned}", path, start)
                if feed.exhausted() and "unexpected end of data" in str(e):
                    # A quote that never closes swallowed the rest of the file: only its first line is
                    # known bad, so read on from the next one. (A quote that closed marks its whole span.)
                    feed.restart_after(start)
                    reader = csv.reader(feed, delimiter=delimiter, quoting=quoting, strict=True)
                continue
            start = feed.row_start
            if not row or (len(row) == 1 and not row[0].strip()):
                self.stats["blank_lines"] += 1
                continue
            if columns is None:
                columns = row
                if len(set(columns)) != len(columns):
                    raise DataError(f"duplicate column names in header {columns}", path=path, line=start)
                missing = [f for f in self.fields or () if f not in columns]
                if missing:
                    raise DataError(f"header has no column {missing[0]!r} (has {columns})",
                                    path=path, line=start, field=missing[0])
                continue
            if len(row) != len(columns):
                self._bad("bad_columns", f"{len(row)} columns, expected {len(columns)} ({columns})", path, start)
                continue
            record = dict(zip(columns, row))
            self._records.append(_select(record, self.fields)[0])
            self._add(file_index, start)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._records)

    def _get(self, index: int) -> dict[str, Any]:
        return dict(self._records[index])


class _LineFeed:
    """Feeds decoded lines to ``csv.reader`` and remembers where each row starts."""

    def __init__(self, lines: list[tuple[int, str]]):
        self._lines = lines
        self._next = 0
        self.current = 0
        self.row_start: Optional[int] = None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self._next >= len(self._lines):
            raise StopIteration
        number, text = self._lines[self._next]
        self._next += 1
        self.current = number
        if self.row_start is None:
            self.row_start = number
        return text + "\n"

    def exhausted(self) -> bool:
        return self._next >= len(self._lines)

    def restart_after(self, line: int) -> None:
        """Feed again from the first line after ``line``."""
        self._next = bisect.bisect_right(self._lines, line, key=lambda numbered: numbered[0])
        self.current = line


_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "delimited", ".csv": "delimited"}


def open_files(patterns: Patterns, fields: Optional[Sequence[str]] = None, *, on_error: str = "raise",
               **kwargs: Any) -> Source:
    """A source for ``patterns``, its kind picked by extension (after ``.gz``/``.bz2``).

    ``.jsonl``/``.json`` (JSON Lines): ``JsonlSource``; ``.tsv``/``.csv``:
    ``DelimitedSource``; anything else: ``TextLineSource`` (one document per
    line, field ``fields[0]`` if given, else ``"text"``). All files must be of
    one kind.
    """
    paths = expand_patterns(patterns)
    kinds = {_FORMATS.get(os.path.splitext(_strip_compression(p).lower())[1], "text") for p in paths}
    if len(kinds) > 1:
        raise DataError(f"{patterns!r} mixes file kinds {sorted(kinds)}; give one kind at a time")
    kind = kinds.pop()
    if kind == "jsonl":
        return JsonlSource(paths, fields, on_error=on_error, **kwargs)
    if kind == "delimited":
        return DelimitedSource(paths, fields, on_error=on_error, **kwargs)
    fields = _fields_tuple(fields)
    if fields is not None and len(fields) != 1:
        raise ValueError(f"text files have one field; got fields={fields}")
    return TextLineSource(paths, field=fields[0] if fields else "text", on_error=on_error, **kwargs)


# --------------------------------------------------------------------------------------
# Bundled data
# --------------------------------------------------------------------------------------
def bundled_path(name: str) -> str:
    """Path of a file in ``t5x_lite/data/bundled`` (e.g. ``"spiece.model"``)."""
    path = BUNDLED_DIR / name
    if not path.is_file():
        have = sorted(p.name for p in BUNDLED_DIR.iterdir()) if BUNDLED_DIR.is_dir() else []
        raise FileNotFoundError(f"no bundled file {name!r} in {BUNDLED_DIR}; have {have}")
    return str(path)


def _bundled_compressed(stem: str) -> str:
    for ext in (".bz2", ".gz"):
        if (BUNDLED_DIR / (stem + ext)).is_file():
            return str(BUNDLED_DIR / (stem + ext))
    return bundled_path(stem + ".bz2")  # raises, listing what there is


_SPLITS = {"corpus": ("train", "validation"), "sentiment": ("train", "validation", "test")}


def bundled_corpus(split: str = "train") -> TextLineSource:
    """The bundled pretraining corpus (``train`` or ``validation``): ``{"text"}``, one document per line."""
    if split not in _SPLITS["corpus"]:
        raise ValueError(f"bundled corpus splits are {_SPLITS['corpus']}, not {split!r}")
    return TextLineSource(_bundled_compressed(f"corpus_{split}.txt"))


def bundled_sentiment(split: str = "train") -> JsonlSource:
    """Bundled Rotten Tomatoes reviews (``train``/``validation``/``test``):
    ``{"text", "label"}``, label ``"positive"`` or ``"negative"``."""
    if split not in _SPLITS["sentiment"]:
        raise ValueError(f"bundled sentiment splits are {_SPLITS['sentiment']}, not {split!r}")
    return JsonlSource(_bundled_compressed(f"rotten_tomatoes_{split}.jsonl"), fields=("text", "label"))

