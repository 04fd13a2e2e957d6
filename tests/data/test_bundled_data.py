"""The offline data shipped in t5x_lite/data/bundled (built by scripts/build_bundled_data.py)."""

import bz2
import functools
import gzip
import hashlib
import json
from pathlib import Path

import pytest

BUNDLED = Path(__file__).resolve().parents[2] / "t5x_lite" / "data" / "bundled"
RT_SPLITS = ("train", "validation", "test")
LABELS = {"positive", "negative"}


def _find(stem: str) -> Path:
    hits = [BUNDLED / f"{stem}.{ext}" for ext in ("bz2", "gz") if (BUNDLED / f"{stem}.{ext}").exists()]
    assert len(hits) == 1, f"expected exactly one of {stem}.bz2/.gz in {BUNDLED}, found {hits}"
    return hits[0]


@functools.lru_cache(maxsize=None)
def _lines(stem: str) -> tuple:
    path = _find(stem)
    opener = bz2.open if path.suffix == ".bz2" else gzip.open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        text = f.read()
    assert text.endswith("\n")
    return tuple(text[:-1].split("\n"))


@functools.lru_cache(maxsize=None)
def _rt(split: str) -> tuple:
    return tuple(json.loads(line) for line in _lines(f"rotten_tomatoes_{split}.jsonl"))


def test_files_exist_and_match_manifest():
    manifest = json.loads((BUNDLED / "MANIFEST.json").read_text(encoding="utf-8"))
    assert (BUNDLED / "LICENSES.md").is_file()
    names = set(manifest["files"])
    for stem in ["corpus_train.txt", "corpus_validation.txt"] + [f"rotten_tomatoes_{s}.jsonl" for s in RT_SPLITS]:
        assert _find(stem).name in names
    assert "spiece.model" in names
    for name, meta in manifest["files"].items():
        data = (BUNDLED / name).read_bytes()
        assert len(data) == meta["bytes"], name
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], name
        if name.endswith((".bz2", ".gz")):
            assert len(_lines(name.rsplit(".", 1)[0])) == meta["lines"], name
    total = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert total < 15_000_000


def test_corpus():
    train, val = _lines("corpus_train.txt"), _lines("corpus_validation.txt")
    n_bytes = sum(len(line.encode("utf-8")) + 1 for line in train + val)
    assert n_bytes > 3_000_000
    assert 0.01 < len(val) / (len(train) + len(val)) < 0.05
    for line in train[:2000] + val:
        assert line and line == " ".join(line.split()), repr(line[:80])
    assert len(set(train)) == len(train) and len(set(val)) == len(val)
    assert not set(train) & set(val)


def test_rotten_tomatoes():
    texts = {}
    sizes = {}
    for split in RT_SPLITS:
        examples = _rt(split)
        sizes[split] = len(examples)
        assert {ex["label"] for ex in examples} == LABELS
        for ex in examples:
            assert set(ex) == {"text", "label"}
            assert isinstance(ex["text"], str) and ex["text"].strip() == ex["text"] and ex["text"]
        texts[split] = {ex["text"].casefold() for ex in examples}
        assert len(texts[split]) == len(examples), f"duplicate text within {split}"
    assert 12_000 < sum(sizes.values()) < 13_000
    assert sizes["train"] > 7 * sizes["validation"] and abs(sizes["validation"] - sizes["test"]) <= 1
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]


def test_sentencepiece_model():
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(BUNDLED / "spiece.model"))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert (sp.id_to_piece(0), sp.id_to_piece(1), sp.id_to_piece(2)) == ("<pad>", "</s>", "<unk>")
    # T5 layout: 100 <extra_id_N> sentinels are appended by the vocabulary wrapper -> 8000 ids.
    assert sp.get_piece_size() == 7900
    assert sp.piece_to_id("<extra_id_0>") == sp.unk_id()
    sentence = "The quick brown fox jumps over the lazy dog, and Python's docs explain why."
    ids = sp.encode(sentence)
    assert 0 < len(ids) < len(sentence) and sp.unk_id() not in ids
    assert sp.decode(ids) == sentence
    # byte fallback: characters unseen in training still round-trip without <unk>.
    rare = "naïve café — 東京"
    assert sp.unk_id() not in sp.encode(rare)
    assert sp.decode(sp.encode(rare)) == rare
