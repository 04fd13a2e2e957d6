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


def _words(n, seed=0):
    """``n`` random lower-case words, space-separated."""
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    return " ".join("".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(n))


def test_split_long_text_keeps_every_character_under_the_limit():
    from t5x_lite.data.vocab import _split_long_text

    text = "première ligne " * 3 + "\n" + "ab " * 30 + "\n" + "日本語" * 40 + " fin"  # 3-byte characters, no spaces
    for limit in (4, 17, 64, 100):
        chunks = _split_long_text(text, limit)
        assert all(0 < len(c.encode("utf-8")) <= limit for c in chunks), limit
        assert "".join("".join(c.split()) for c in chunks) == "".join(text.split())  # nothing lost or cut in two
    chunks = _split_long_text(text, 64)
    assert chunks[0] == "première ligne première ligne première ligne"  # the newline (byte 48) beats later spaces
    assert all(not c.startswith("b") and not c.endswith("a") for c in chunks[:3])  # at spaces, not mid-word
    assert "日本語" in chunks[-2] and chunks[-1].endswith("fin")
    assert _split_long_text("short", 64) == ["short"]


def test_long_documents_are_split_not_silently_dropped(tmp_path, caplog):
    # SentencePiece skips texts over max_sentence_length (bytes) without a word; all of them skipped used to
    # fail with "INTERNAL: ... [!sentences_.empty()]".
    words = _words(6000)
    rare = "zqxjv"  # only in the long documents: in the vocabulary only if they were trained on
    long_doc = (words + f" {rare}{rare}") * 2
    assert len(long_doc.encode()) > 16384
    corpus = tmp_path / "long.txt"
    corpus.write_text("\n".join([long_doc] * 10) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="t5x_lite.data.vocab"):
        v = train_vocabulary(str(corpus), 400, tmp_path / "v", byte_fallback=False)
    assert v.num_pieces == 300
    assert "split 10 document(s)" in caplog.text and "long.txt" in caplog.text and "16384 bytes" in caplog.text
    assert "zqxjvzqxjv" in v.decode(v.encode(f"{rare}{rare}"))
    assert any("q" in v.tokenizer.id_to_piece(i) for i in range(3, v.num_pieces))


def test_max_sentence_length_counts_bytes(tmp_path, monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def record(**kwargs):
        seen.extend(kwargs["sentence_iterator"])
        assert kwargs["max_sentence_length"] == 200
        raise Stop

    monkeypatch.setattr(spm.SentencePieceTrainer, "train", record)
    doc = " ".join(["éèêë"] * 40)  # 199 characters, 359 bytes: over the limit only when counted in bytes
    (tmp_path / "c.txt").write_text("\n".join([doc] * 20 + ["short line"]) + "\n", encoding="utf-8")
    with pytest.raises(Stop):
        train_vocabulary(str(tmp_path / "c.txt"), 120, tmp_path / "v", byte_fallback=False, max_sentence_length=200)
    assert all(len(t.encode()) <= 200 for t in seen) and len(seen) == 20 * 2 + 1
    assert "".join(seen).count("é") == 20 * 40
    with pytest.raises(ValueError, match="max_sentence_length must be >= 4"):
        train_vocabulary(str(tmp_path / "c.txt"), 120, tmp_path / "w", byte_fallback=False, max_sentence_length=3)


def test_training_errors_are_in_vocab_size_terms(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("\n".join(_words(12, seed=i) for i in range(40)) + "\nÀÉÎõü\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at most vocab_size") as high:
        train_vocabulary(str(corpus), 30000, tmp_path / "a", extra_ids=7)
    most = int(str(high.value).split("at most vocab_size ")[1].split()[0])
    assert "vocab_size 30000 is too large for text lines from" in str(high.value) and "small.txt" in str(high.value)
    assert f"({most - 7} SentencePiece pieces + 7 extra ids)" in str(high.value)
    assert "Please set" not in str(high.value) and "\n" not in str(high.value)
    assert train_vocabulary(str(corpus), most, tmp_path / "ok", extra_ids=7).vocab_size == most  # the bound is exact
    with pytest.raises(ValueError, match="at most vocab_size"):
        train_vocabulary(str(corpus), most + 1, tmp_path / "b", extra_ids=7)

    with pytest.raises(ValueError, match="too small for the characters in") as low:
        train_vocabulary(str(corpus), 20, tmp_path / "c", extra_ids=7, byte_fallback=False)
    message = str(low.value)
    least = int(message.split("at least vocab_size ")[1].split()[0])
    assert "character_coverage (now 0.9999" in message and "--character_coverage" not in message
    assert "small.txt" in message and "required_chars" not in message
    assert train_vocabulary(str(corpus), least, tmp_path / "d", extra_ids=7, byte_fallback=False).vocab_size == least
    with pytest.raises(ValueError, match=f"at least vocab_size {least} "):
        train_vocabulary(str(corpus), least - 1, tmp_path / "e", extra_ids=7, byte_fallback=False)
    with pytest.raises(ValueError, match=r"character_coverage must be in \[0.98, 1\], got 0.5"):
        train_vocabulary(str(corpus), least, tmp_path / "f", character_coverage=0.5)
