"""Record sources: local text/JSONL/TSV/CSV files (with their bad-input handling) and TFDS.

TensorFlow is imported only inside the TFDS tests (never by importing this
file or t5x_lite.data.sources); the TFDS tests run offline on
``tfds.testing.mock_data``.
"""

import bz2
import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path

import grain
import numpy as np
import pytest

from t5x_lite.data.sources import (
    DataError,
    DelimitedSource,
    ExpandedSource,
    JsonlSource,
    TextLineSource,
    bundled_corpus,
    bundled_path,
    bundled_sentiment,
    open_files,
)
from t5x_lite.data.tfds_source import TfdsSource

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, data) -> str:
    """Write text or bytes, compressed by the name's extension; return the path as str."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if path.suffix == ".gz":
        raw = gzip.compress(raw)
    elif path.suffix == ".bz2":
        raw = bz2.compress(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return str(path)


def texts(source, field="text"):
    return [r[field] for r in source]


# --------------------------------------------------------------------------------------
# Text lines
# --------------------------------------------------------------------------------------
def test_text_lines(tmp_path):
    p = write(tmp_path / "a.txt", "\ufeffone\r\n\ntwo words\n   \nthree")  # BOM, CRLF, blanks, no final newline
    src = TextLineSource(p)
    assert len(src) == 3 and texts(src) == ["one", "two words", "three"]
    assert [src.origin(i) for i in range(3)] == [f"{p}:1", f"{p}:3", f"{p}:5"]
    assert src.origin(-1) == f"{p}:5" and src[-1] == {"text": "three"} and src[np.int64(1)]["text"] == "two words"
    assert src.stats == {"blank_lines": 2}
    assert p in src.description and p in repr(src)
    with pytest.raises(IndexError):
        src[3]
    with pytest.raises(TypeError):
        src[0:2]
    assert TextLineSource(p, field="doc")[0] == {"doc": "one"}


def test_paragraphs(tmp_path):
    p = write(tmp_path / "p.txt", "a1\na2\n\n\nb1\n\nc1\nc2\nc3\n")
    src = TextLineSource(p, mode="paragraph")
    assert texts(src) == ["a1\na2", "b1", "c1\nc2\nc3"]
    assert [src.origin(i) for i in range(3)] == [f"{p}:1", f"{p}:5", f"{p}:7"]
    with pytest.raises(ValueError, match="mode"):
        TextLineSource(p, mode="sentence")


def test_compression_globs_and_order(tmp_path):
    write(tmp_path / "d" / "b.txt.gz", "b1\nb2\n")
    write(tmp_path / "d" / "a.txt.bz2", "a1\n")
    write(tmp_path / "d" / "c.txt", "c1\n")
    write(tmp_path / "d" / "sub" / "e.txt", "e1\n")
    src = TextLineSource(str(tmp_path / "d" / "*.txt*"))
    assert texts(src) == ["a1", "b1", "b2", "c1"]  # sorted glob order
    assert src.origin(2) == f"{tmp_path}/d/b.txt.gz:2"
    assert "3 files" in src.description
    # a list of patterns: pattern order, duplicates dropped; ** recurses; Path objects work
    src = TextLineSource([tmp_path / "d" / "c.txt", str(tmp_path / "d" / "*.txt*"), str(tmp_path / "**" / "e.txt")])
    assert texts(src) == ["c1", "a1", "b1", "b2", "e1"]
    # one file spelled two ways is still one file
    src = TextLineSource([str(tmp_path / "d" / "c.txt"), str(tmp_path / "d" / "sub" / ".." / "c.txt")])
    assert texts(src) == ["c1"]
    (tmp_path / "d" / "c2.txt").symlink_to(tmp_path / "d" / "c.txt")  # a link is a file of its own (upsampling)
    assert texts(TextLineSource(str(tmp_path / "d" / "c*.txt"))) == ["c1", "c1"]


def _per_count(record):
    return [dict(record, copy=k) for k in range(record["n"])]


def test_expanded_source_expands_filters_and_names_the_record(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"n": 2}\n{"n": 0}\n{"n": 1}\n{"n": "x"}\n')
    base = JsonlSource(str(tmp_path / "a.jsonl"))
    first = ExpandedSource(JsonlSource(str(tmp_path / "a.jsonl")), _per_count, "per count")
    with pytest.raises(DataError, match=r"a.jsonl:4: _per_count failed: TypeError"):
        len(first)
    (tmp_path / "a.jsonl").write_text('{"n": 2}\n{"n": 0}\n{"n": 1}\n')
    source = ExpandedSource(JsonlSource(str(tmp_path / "a.jsonl")), _per_count, "per count")
    assert len(source) == 3 and [r["copy"] for r in source] == [0, 1, 0]
    assert source.origin(1).endswith("a.jsonl:1 (its example 2)") and source.origin(2).endswith("a.jsonl:3")
    assert source.description.endswith("a.jsonl, per count") and len(base) == 4
    copy = pickle.loads(pickle.dumps(source))  # for grain's worker processes
    assert copy[2] == source[2]
    with pytest.raises(DataError, match="returned a dict, not a list of records"):
        len(ExpandedSource(source, dict, "wrong"))


def test_grain_and_pickle(tmp_path):
    p = write(tmp_path / "x.txt", "".join(f"line {i}\n" for i in range(10)))
    src = TextLineSource(p)
    ds = grain.MapDataset.source(src).map(lambda r: r["text"].upper())
    assert len(ds) == 10 and ds[3] == "LINE 3" and list(ds)[-1] == "LINE 9"
    shuffled = list(grain.MapDataset.source(src).shuffle(seed=0))
    assert sorted(r["text"] for r in shuffled) == sorted(texts(src))
    clone = pickle.loads(pickle.dumps(src))
    assert texts(clone) == texts(src) and clone.origin(4) == src.origin(4)
    record = src[0]
    record["text"] = "mutated"
    assert src[0]["text"] == "line 0"  # records are fresh dicts


# --------------------------------------------------------------------------------------
# JSONL and delimited files
# --------------------------------------------------------------------------------------
def test_jsonl(tmp_path):
    lines = [{"text": "a", "label": 1, "extra": [1, 2]}, {"text": "b", "label": 0, "extra": None}]
    p = write(tmp_path / "x.jsonl.gz", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert list(JsonlSource(p)) == lines
    src = JsonlSource(p, fields=["label", "text"])
    assert list(src) == [{"label": 1, "text": "a"}, {"label": 0, "text": "b"}]
    assert src.origin(1) == f"{p}:2" and src.stats == {"blank_lines": 1}
    with pytest.raises(TypeError):
        JsonlSource(p, fields="text")


def test_tsv_and_csv(tmp_path):
    tsv = write(tmp_path / "x.tsv", 'sentence\tlabel\nhe said "hi\tthere\n\nok "quoted" text\t1\n')
    src = DelimitedSource(tsv)
    # QUOTE_NONE for tabs: GLUE-style TSVs keep literal quotes
    assert list(src) == [{"sentence": 'he said "hi', "label": "there"}, {"sentence": 'ok "quoted" text', "label": "1"}]
    assert src.origin(1) == f"{tsv}:4" and src.stats == {"blank_lines": 1}
    csv_path = write(tmp_path / "y.csv.bz2", 'id,text,label\n1,"multi\nline, quoted",pos\n2,plain,neg\n')
    src = DelimitedSource(csv_path, fields=["text", "label"])
    assert list(src) == [{"text": "multi\nline, quoted", "label": "pos"}, {"text": "plain", "label": "neg"}]
    assert [src.origin(i) for i in range(2)] == [f"{csv_path}:2", f"{csv_path}:4"]
    headless = write(tmp_path / "z.dat", "a|1\nb|2\n")
    src = DelimitedSource(headless, fields=["t", "n"], delimiter="|", header=False)
    assert list(src) == [{"t": "a", "n": "1"}, {"t": "b", "n": "2"}]
    with pytest.raises(ValueError, match="fields"):
        DelimitedSource(headless, header=False, delimiter="|")
    with pytest.raises(DataError, match="delimiter"):
        DelimitedSource(headless)


def test_open_files_dispatch(tmp_path):
    assert isinstance(open_files(write(tmp_path / "a.jsonl.bz2", '{"text": "x"}\n')), JsonlSource)
    assert isinstance(open_files(write(tmp_path / "a.csv", "text\nx\n")), DelimitedSource)
    src = open_files(write(tmp_path / "a.txt.gz", "x\n"), ["body"])
    assert isinstance(src, TextLineSource) and src[0] == {"body": "x"}
    with pytest.raises(DataError, match="mixes"):
        open_files(str(tmp_path / "a.*"))


def test_bundled():
    assert Path(bundled_path("spiece.model")).is_file()
    with pytest.raises(FileNotFoundError, match="nope"):
        bundled_path("nope.txt")
    manifest = json.loads(Path(bundled_path("MANIFEST.json")).read_text())["files"]
    val = bundled_corpus("validation")
    assert len(val) == manifest["corpus_validation.txt.bz2"]["lines"] and val.stats == {"blank_lines": 0}
    assert val.origin(0).endswith("corpus_validation.txt.bz2:1")
    for split in ("train", "validation", "test"):
        rt = bundled_sentiment(split)
        assert len(rt) == manifest[f"rotten_tomatoes_{split}.jsonl.bz2"]["lines"]
        assert set(rt[0]) == {"text", "label"} and rt[0]["label"] in ("positive", "negative")
    with pytest.raises(ValueError):
        bundled_corpus("test")


# --------------------------------------------------------------------------------------
# Bad input: one DataError naming file and line, or skipped and counted
# --------------------------------------------------------------------------------------
GOOD_JSON = '{"text": "fine", "label": 1}'

BAD_CASES = {
    # name: (make source(paths, on_error), file name, content, line, field, stats key)
    "invalid_utf8": (lambda p, e: TextLineSource(p, on_error=e), "t.txt.gz",
                     b"ok\nalso ok\nbad \xff\xfe byte\nok again\n", 3, None, "skipped_invalid_utf8"),
    "invalid_utf8_jsonl": (lambda p, e: JsonlSource(p, on_error=e), "j.jsonl",
                           (GOOD_JSON + "\n").encode() + b'{"text": "\xc3("}\n', 2, None, "skipped_invalid_utf8"),
    "bad_json": (lambda p, e: JsonlSource(p, on_error=e), "j.jsonl.bz2",
                 f"{GOOD_JSON}\n{{'text': 'single quotes'}}\n{GOOD_JSON}\n", 2, None, "skipped_bad_json"),
    "json_not_object": (lambda p, e: JsonlSource(p, on_error=e), "j.jsonl",
                        f"{GOOD_JSON}\n\n[1, 2]\n", 3, None, "skipped_bad_json"),
    "missing_field": (lambda p, e: JsonlSource(p, fields=["text", "label"], on_error=e), "j.jsonl",
                      f'{GOOD_JSON}\n{GOOD_JSON}\n{{"text": "no label"}}\n', 3, "label", "skipped_missing_field"),
    "wrong_columns": (lambda p, e: DelimitedSource(p, on_error=e), "d.tsv",
                      "text\tlabel\na\t1\nb\t2\textra\nc\t3\n", 3, None, "skipped_bad_columns"),
    "too_few_columns": (lambda p, e: DelimitedSource(p, on_error=e), "d.csv.gz",
                        "text,label\na,1\n\nb\n", 4, None, "skipped_bad_columns"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_raises_naming_file_and_line(tmp_path, case):
    make, name, content, line, field, _ = BAD_CASES[case]
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        make(path, "raise")
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert (info.value.path, info.value.line, info.value.field) == (path, line, field)
    if field:
        assert repr(field) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_skipped_and_counted(tmp_path, case, caplog):
    make, name, content, line, _, key = BAD_CASES[case]
    path = write(tmp_path / name, content)
    src = make(path, "skip")
    assert src.stats[key] == 1
    assert f"{path}:{line}" not in [src.origin(i) for i in range(len(src))]
    assert len(src) >= 1 and any(key in r.getMessage() and f":{line}:" in r.getMessage() for r in caplog.records)


def test_empty_and_unreadable_files(tmp_path):
    good = write(tmp_path / "good.txt", "x\n")
    empty = write(tmp_path / "empty.txt", "")
    blank = write(tmp_path / "blank.txt", "\n \n")
    corrupt = write(tmp_path / "corrupt.txt.gz", b"")
    Path(corrupt).write_bytes(b"\x1f\x8bnot gzip at all")
    header_only = write(tmp_path / "h.tsv", "text\tlabel\n")
    for path, message in [(empty, "empty"), (blank, "whitespace"), (corrupt, "cannot read")]:
        with pytest.raises(DataError, match=message) as info:
            TextLineSource([good, path])
        assert str(info.value).startswith(f"{path}: ") and info.value.path == path
    with pytest.raises(DataError, match="header") as info:
        DelimitedSource(header_only)
    assert info.value.path == header_only
    src = TextLineSource([good, empty, blank, corrupt], on_error="skip")
    assert texts(src) == ["x"]
    assert src.stats == {"blank_lines": 0, "skipped_empty_files": 2, "skipped_unreadable_files": 1}
    # nothing left at all: always an error
    with pytest.raises(DataError, match="no records"):
        TextLineSource([empty, blank], on_error="skip")
    with pytest.raises(ValueError, match="on_error"):
        TextLineSource(good, on_error="ignore")


def test_glob_matching_nothing_always_raises(tmp_path):
    good = write(tmp_path / "good.txt", "x\n")
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=r"nothing\*\.txt.*matches no files"):
            TextLineSource([good, str(tmp_path / "nothing*.txt")], on_error=on_error)
    with pytest.raises(DataError, match="no file patterns"):
        JsonlSource([])


def test_header_errors_always_raise(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\na\t1\n")
    with pytest.raises(DataError, match="'idx'") as info:
        DelimitedSource(path, fields=["text", "idx"], on_error="skip")
    assert (info.value.line, info.value.field) == (1, "idx")
    dup = write(tmp_path / "dup.csv", "a,a\n1,2\n")
    with pytest.raises(DataError, match="duplicate"):
        DelimitedSource(dup)


def test_skip_counts_several(tmp_path):
    content = b"".join([b"ok %d\n" % i if i % 3 else b"bad \xff %d\n" % i for i in range(9)])
    src = TextLineSource(write(tmp_path / "t.txt", content), on_error="skip")
    assert len(src) == 6 and src.stats["skipped_invalid_utf8"] == 3
    assert src.origin(0).endswith("t.txt:2")


def test_classic_mac_line_endings(tmp_path):
    p = write(tmp_path / "mac.txt", "one\rtwo words\r\rthree\r")
    src = TextLineSource(p)
    assert texts(src) == ["one", "two words", "three"] and src.origin(2) == f"{p}:4"
    rows = DelimitedSource(write(tmp_path / "mac.tsv", "text\tlabel\ra\t1\rb\t0\r"))
    assert [rows[i] for i in range(2)] == [{"text": "a", "label": "1"}, {"text": "b", "label": "0"}]
    # one line holding a carriage return but no line feed elsewhere is still one line
    assert texts(TextLineSource(write(tmp_path / "one.txt", "a\r\n"))) == ["a"]
    two_crs = TextLineSource(write(tmp_path / "two.txt", "only line\r\r"))
    assert texts(two_crs) == ["only line"] and two_crs.stats["blank_lines"] == 1


def test_an_unclosed_quote_costs_one_row_and_long_fields_are_read(tmp_path):
    lines = ["text,label", 'fine,1', '"never closed,0'] + [f"row {i},{i % 2}" for i in range(5)]
    p = write(tmp_path / "q.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"q\.csv:3: malformed row: .*a quoted field runs from line 3 to 8"):
        DelimitedSource(p)
    src = DelimitedSource(p, on_error="skip")
    assert src.stats["skipped_bad_columns"] == 1 and len(src) == 6
    assert src[1] == {"text": "row 0", "label": "0"} and src.origin(1) == f"{p}:4"
    # a quote that closes on a later line marks that whole span as the bad row: no record is made of its tail
    p = write(tmp_path / "closed.csv", 'text,label\nok,1\n"two\nlines"x,1\nfine,0\n')
    src = DelimitedSource(p, on_error="skip")
    assert [src[i] for i in range(len(src))] == [{"text": "ok", "label": "1"}, {"text": "fine", "label": "0"}]
    # the same span ending on the file's last line: still one bad row, not a restart inside it
    p = write(tmp_path / "eof.csv", 'text,label\na,1\n"b\nc,2\nd" junk,3\n')
    src = DelimitedSource(p, on_error="skip")
    assert [src[i] for i in range(len(src))] == [{"text": "a", "label": "1"}]
    # a malformed header is never skipped: the first row would become the column names
    bad_header = write(tmp_path / "h.csv", '"text,label\nfine,1\nrow,0\n')
    with pytest.raises(DataError, match=r"h\.csv:1: malformed header"):
        DelimitedSource(bad_header, on_error="skip")
    long = "x" * 300_000  # past csv's default 131072-character cap on a field
    src = DelimitedSource(write(tmp_path / "long.csv", f'text,label\n"{long}",1\n'))
    assert src[0]["text"] == long


# --------------------------------------------------------------------------------------
# TFDS (offline, mock data)
# --------------------------------------------------------------------------------------
def test_import_does_not_import_tensorflow():
    code = ("import sys, t5x_lite.data.sources, t5x_lite.data.vocab; "
            "bad = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


TFDS_CASES = {
    # name, split: the string features every record must have
    ("glue/sst2", "train"): ("sentence",),
    ("c4/en", "validation"): ("text", "url"),
    ("super_glue/boolq", "validation"): ("question", "passage"),
    ("wmt14_translate/de-en", "train"): ("de", "en"),
    ("squad", "validation"): ("question", "context", "title"),
    ("cnn_dailymail", "test"): ("article", "highlights"),
    ("xsum", "train"): ("document", "summary"),
}


def test_tfds_data_source_under_mock(tfds):
    with tfds.testing.mock_data(num_examples=5):
        for (name, split), text_fields in TFDS_CASES.items():
            src = TfdsSource(name, split)
            assert src.mode is None  # nothing opened yet
            assert len(src) == 5 and src.mode == "data_source", name
            for i in range(5):
                record = src[i]
                for f in text_fields:
                    assert isinstance(record[f], str), (name, f)
            assert src.origin(4) == f"tfds:{name}/{split}[4]"
        squad = TfdsSource("squad", "validation")[0]
        assert isinstance(squad["answers"]["text"], list) and isinstance(squad["answers"]["text"][0], str)
        sst2 = TfdsSource("glue/sst2", "train", fields=["sentence", "label"])
        assert set(sst2[0]) == {"sentence", "label"} and isinstance(sst2[0]["label"], int)
        with pytest.raises(DataError, match="'premise'"):
            TfdsSource("glue/sst2", "train", fields=["premise"])[0]
        ds = grain.MapDataset.source(sst2).map(lambda r: r["sentence"])
        assert len(ds) == 5 and isinstance(ds[2], str)
        sst2_all = TfdsSource("glue/sst2", "train")
        len(sst2_all)
        clone = pickle.loads(pickle.dumps(sst2_all))
        assert clone._backend is None and clone.mode is None  # a worker re-opens the files


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def _structure(x):
    if isinstance(x, dict):
        return {k: _structure(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return ("ndarray", x.dtype.kind, x.ndim)
    if isinstance(x, list):
        return ("list", sorted({type(v).__name__ for v in x}))
    return type(x).__name__


def test_tfds_in_memory_matches_data_source(tfds, monkeypatch):
    with tfds.testing.mock_data(num_examples=5):
        for name, split in [("glue/sst2", "train"), ("squad", "validation")]:
            random_access = TfdsSource(name, split)
            memory = TfdsSource(name, split, random_access="memory")
            assert len(memory) == 5 and memory.mode == "memory"
            # mock data: both paths start from the same example, then their generators diverge
            assert _same(memory[0], random_access[0]), name
            for i in range(5):
                assert _structure(memory[i]) == _structure(random_access[i]), name
            assert pickle.loads(pickle.dumps(memory))._backend is not None  # records travel along

        def no_array_record(*args, **kwargs):
            raise NotImplementedError("Random access data source for file format tfrecord is not supported")

        monkeypatch.setattr(tfds, "data_source", no_array_record)
        fallback = TfdsSource("wmt14_translate/de-en", "train")
        assert len(fallback) == 5 and fallback.mode == "memory" and isinstance(fallback[0]["de"], str)
        with pytest.raises(DataError, match="data_source failed"):
            len(TfdsSource("glue/sst2", "train", random_access="data_source"))
