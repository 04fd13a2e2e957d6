"""SentencePieceVocabulary (T5 id layout) and train_vocabulary."""

import bz2
import gzip
import json
import pickle
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm

from t5x_lite.data import sources
from t5x_lite.data.objectives import VocabInfo, span_corruption
from t5x_lite.data.sources import DataError
from t5x_lite.data.vocab import SentencePieceVocabulary, default_vocabulary, train_vocabulary

TEXT = "Thank you for inviting me to your party last week."


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


@pytest.fixture(scope="module")
def docs():
    return [r["text"] for r in sources.bundled_corpus("validation")]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, docs):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(docs[:300]) + "\n", encoding="utf-8")
    return path


def test_layout(vocab):
    assert vocab.num_pieces == 7900 and vocab.extra_ids == 100 and vocab.vocab_size == 8000
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert vocab.tokenizer.id_to_piece([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    assert vocab.tokenizer.bos_id() == -1
    assert vocab.sentinel_id(0) == 7999 and vocab.sentinel_id(99) == 7900
    for bad in (-1, 100):
        with pytest.raises(ValueError):
            vocab.sentinel_id(bad)
    info = vocab.vocab_info()
    assert info == VocabInfo(vocab_size=8000, num_extra_ids=100, num_reserved_ids=3)
    assert info.sentinel_ids(3).tolist() == [vocab.sentinel_id(i) for i in range(3)]
    assert info.random_token_range == (3, 7900)
    assert vocab.model_file == sources.bundled_path("spiece.model")
    assert SentencePieceVocabulary(vocab.model_file, extra_ids=0).vocab_size == 7900


def test_round_trip(vocab, docs):
    for text in docs[:300] + [TEXT, "日本語 ☃ émoji 🙂", ""]:
        ids = vocab.encode(text)
        assert vocab.eos_id not in ids and vocab.pad_id not in ids
        assert all(3 <= i < vocab.num_pieces for i in ids)
        # nmt_nfkc normalizes Unicode (… -> ...) and runs of whitespace; byte fallback keeps the rest
        assert vocab.decode(ids) == " ".join(unicodedata.normalize("NFKC", text).split())


def test_batch(vocab, docs):
    texts = docs[:5]
    batch = vocab.encode_batch(texts)
    assert batch == [vocab.encode(t) for t in texts]
    width = max(map(len, batch)) + 3
    padded = np.zeros((len(batch), width), np.int32)
    for row, ids in zip(padded, batch):
        row[: len(ids)] = ids
        row[len(ids)] = vocab.eos_id
    assert vocab.decode_batch(padded) == vocab.decode_batch(batch) == [vocab.decode(b) for b in batch]
    with pytest.raises(ValueError, match="decode_batch"):
        vocab.decode(padded)


def test_decode_stops_at_eos_and_drops_pad(vocab):
    ids = vocab.encode(TEXT)
    assert vocab.decode([0, 0] + ids[:3] + [0] + ids[3:] + [1] + ids + [0]) == TEXT
    assert vocab.decode(np.array(ids + [1, 5, 6, 7], np.int64)) == TEXT
    assert vocab.decode(iter(ids + [1, 9])) == TEXT
    assert vocab.decode([1] + ids) == ""
    assert vocab.decode([]) == ""


def test_sentinels_decode_as_extra_ids(vocab):
    ids = vocab.encode(TEXT)  # ▁Than k ▁you ▁for ▁in vi ting ▁me ...
    s = vocab.sentinel_id
    assert vocab.decode(ids[:3] + [s(0)] + ids[7:10] + [s(1)] + ids[12:]) == (
        "Thank you <extra_id_0> me to your <extra_id_1> week."
    )
    assert vocab.decode([s(0)] + ids[3:7] + [s(1), s(2)]) == "<extra_id_0> for inviting <extra_id_1> <extra_id_2>"
    assert vocab.decode([s(99), 1, s(0)]) == "<extra_id_99>"


def test_span_corruption_output_decodes(vocab):
    tokens = np.asarray(vocab.encode(" ".join([TEXT] * 4)), np.int32)
    example = span_corruption(vocab.vocab_info())(tokens, np.random.default_rng(0))
    inputs, targets = vocab.decode(example["inputs"]), vocab.decode(example["targets"])
    assert "<extra_id_0>" in inputs and targets.startswith("<extra_id_0>")


def test_out_of_range_ids_do_not_crash(vocab):
    unk = vocab.decode([vocab.unk_id])
    assert unk.strip() == "⁇"
    assert vocab.decode([-1]) == unk and vocab.decode([8000]) == unk and vocab.decode([10**9]) == unk
    ids = vocab.encode(TEXT)
    out = vocab.decode(np.array([-7] + ids[:3] + [123456, vocab.sentinel_id(0)], np.int64))
    assert out.startswith("⁇") and "Thank you" in out and out.endswith("<extra_id_0>")
    assert isinstance(vocab.decode(np.array([3, 4, 255], np.uint8)), str)  # raw bytes pieces


def test_pickle_keeps_only_path(vocab):
    blob = pickle.dumps(vocab)
    assert len(blob) < 1000  # not the 370 kB model
    clone = pickle.loads(blob)
    assert clone._sp is None
    assert clone.encode(TEXT) == vocab.encode(TEXT) and clone.vocab_size == 8000


def test_train_is_deterministic_and_loads(tmp_path, tiny_corpus):
    runs = []
    for run in ("a", "b"):
        v = train_vocabulary(str(tiny_corpus), 300, tmp_path / run / "tiny", byte_fallback=False)
        runs.append(v)
        assert v.vocab_size == 300 and v.num_pieces == 200 and v.sentinel_id(0) == 299
    for ext in (".model", ".vocab"):
        a, b = (tmp_path / r / f"tiny{ext}" for r in "ab")
        assert a.read_bytes() == b.read_bytes(), ext
    vocab_lines = (tmp_path / "a" / "tiny.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == 200 and vocab_lines[:3] == ["<pad>\t0", "</s>\t0", "<unk>\t0"]
    loaded = SentencePieceVocabulary(tmp_path / "a" / "tiny.model")
    assert loaded.vocab_size == 300 and loaded.vocab_info() == VocabInfo(300, 100, 3)
    text = "the cat sat on the mat"
    assert loaded.decode(loaded.encode(text)) == text
    sp = loaded.tokenizer
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)


def test_train_byte_fallback_and_formats(tmp_path, docs):
    lines = docs[:300]
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    v = train_vocabulary(str(tmp_path / "*.gz"), 500, tmp_path / "out" / "m")
    assert v.vocab_size == 500 and v.tokenizer.id_to_piece(3) == "<0x00>"
    assert v.decode(v.encode("日本 ☃")) == "日本 ☃"  # unseen characters survive as bytes
    jsonl = tmp_path / "c.jsonl.bz2"
    jsonl.write_bytes(bz2.compress("".join(json.dumps({"body": t, "n": 1}) + "\n" for t in lines).encode()))
    vj = train_vocabulary(str(jsonl), 500, tmp_path / "j" / "m", text_field="body")
    assert (tmp_path / "j" / "m.model").read_bytes() == (tmp_path / "out" / "m.model").read_bytes()
    assert vj.vocab_size == 500


def test_train_errors(tmp_path, tiny_corpus):
    with pytest.raises(DataError, match="matches no files"):
        train_vocabulary(str(tmp_path / "nothing*.txt"), 300, tmp_path / "x", byte_fallback=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.txt"):
        train_vocabulary(str(empty), 300, tmp_path / "x", byte_fallback=False)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(DataError, match="blank.txt"):
        train_vocabulary(str(blank), 300, tmp_path / "x", byte_fallback=False)
    with pytest.raises(ValueError, match="byte_fallback"):
        train_vocabulary(str(tiny_corpus), 300, tmp_path / "x")  # 200 pieces < 256 bytes + 3
    assert not list(tmp_path.glob("x.*"))


def test_wrong_layout_raises_naming_file(tmp_path, tiny_corpus):
    prefix = tmp_path / "default_layout"
    spm.SentencePieceTrainer.train(input=str(tiny_corpus), model_prefix=str(prefix), vocab_size=150,
                                   num_threads=1, minloglevel=2)  # spm defaults: unk 0, bos 1, eos 2
    with pytest.raises(ValueError, match=r"default_layout\.model.*pad=0, eos=1, unk=2"):
        SentencePieceVocabulary(f"{prefix}.model")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="garbage.model"):
        SentencePieceVocabulary(garbage)
    with pytest.raises(FileNotFoundError, match="missing.model"):
        SentencePieceVocabulary(tmp_path / "missing.model")


def test_a_vocabulary_that_appears_during_training_is_not_replaced(tiny_corpus, tmp_path, monkeypatch):
    train = spm.SentencePieceTrainer.train
    prefix = tmp_path / "v"

    def train_while_someone_else_writes(*args, **kwargs):
        train(*args, **kwargs)
        (tmp_path / "v.vocab").write_text("theirs\n")  # after the up-front check, before publishing

    monkeypatch.setattr(spm.SentencePieceTrainer, "train", train_while_someone_else_writes)
    with pytest.raises(FileExistsError):
        train_vocabulary(str(tiny_corpus), 300, prefix, byte_fallback=False)
    assert (tmp_path / "v.vocab").read_text() == "theirs\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("v.")) == ["v.vocab"]  # no half pair
