"""The grain pipeline: determinism, exact resume, host sharding, packing, bad input."""

import json
import re

import numpy as np
import pytest

from t5x_lite.data.features import (
    DecoderOnlyFeatureConverter,
    EncDecFeatureConverter,
    EncoderOnlyFeatureConverter,
    Feature,
)
from t5x_lite.data.objectives import VocabInfo, make_objective
from t5x_lite.data.pipeline import check_task_fits, get_dataset
from t5x_lite.data.tasks import DataError, Mixture, Task


class CharVocab:
    """Byte-level stand-in for SentencePiece: ids 3..258 are bytes, 100 sentinels on top."""

    pad_id, eos_id, unk_id = 0, 1, 2
    vocab_size = 3 + 256 + 100

    def encode(self, text):
        return [3 + b for b in text.encode()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def vocab_info(self):
        return VocabInfo(vocab_size=self.vocab_size)


class ListSource:
    def __init__(self, records, name="mem.jsonl"):
        self.records, self.description = records, name

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def origin(self, i):
        return f"{self.description}:{i + 1}"


VOCAB = CharVocab()
DOCS = [{"text": f"document number {i} says " + "abc " * (i % 7 + 1)} for i in range(200)]
PAIRS = [{"q": f"question {i}" + "?" * (i % 5), "a": f"answer {i}"} for i in range(60)]


def _corpus_task(objective="span_3_15_u_u"):
    features = ("inputs", "mlm_targets", "mlm_weights") if objective == "bert_mlm" else ("inputs", "targets")
    return Task(name="mem_corpus", source=lambda split: ListSource(DOCS),
                output_features={name: Feature(VOCAB, add_eos=objective != "bert_mlm") for name in features},
                objective=make_objective(objective, VOCAB.vocab_info()))


def _qa_task(records=PAIRS):
    return Task(name="mem_qa", source=lambda split: ListSource(records),
                preprocessors=(lambda ex: {"inputs": ex["q"], "targets": ex["a"]},),
                output_features={"inputs": Feature(VOCAB), "targets": Feature(VOCAB)})


LENGTHS = {"inputs": 32, "targets": 8}


def _batches(ds, n, state=None):
    it = iter(ds)
    if state is not None:
        it.set_state(state)
    return [next(it) for _ in range(n)]


def test_span_corruption_batches_have_exact_lengths_and_are_deterministic():
    ds, stats = get_dataset(_corpus_task(), split="train", feature_lengths=LENGTHS, batch_size=4,
                            converter=EncDecFeatureConverter(), seed=3, shard=(0, 1))
    a = _batches(ds, 3)
    b = _batches(get_dataset(_corpus_task(), split="train", feature_lengths=LENGTHS, batch_size=4,
                             converter=EncDecFeatureConverter(), seed=3, shard=(0, 1))[0], 3)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert a[0]["encoder_input_tokens"].shape == (4, 32)
    # inputs come out at exactly the feature length: no padding, EOS last
    assert (a[0]["encoder_input_tokens"] != 0).all() and (a[0]["encoder_input_tokens"][:, -1] == 1).all()
    assert stats.as_dict()["truncated_tokens"] == {}
    c = _batches(get_dataset(_corpus_task(), split="train", feature_lengths=LENGTHS, batch_size=4,
                             converter=EncDecFeatureConverter(), seed=4, shard=(0, 1))[0], 1)
    assert not np.array_equal(a[0]["encoder_input_tokens"], c[0]["encoder_input_tokens"])


@pytest.mark.parametrize("pack", [False, True])
def test_resume_mid_epoch_yields_exactly_the_next_batches(pack):
    def make():
        return get_dataset(_qa_task(), split="train", feature_lengths=LENGTHS, batch_size=4, pack=pack,
                           converter=EncDecFeatureConverter(pack=pack), seed=1, shard=(0, 1))[0]

    it = iter(make())
    for _ in range(13):  # mid-epoch (60 examples, 4 per row); the 20 after it cross into the next epoch
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(20)]
    resumed = _batches(make(), 20, state)
    for x, y in zip(expected, resumed):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_hosts_get_disjoint_shards_of_the_global_batch():
    rows = []
    for host in range(2):
        ds, _ = get_dataset(_qa_task(), split="train", feature_lengths=LENGTHS, batch_size=8,
                            converter=EncDecFeatureConverter(), seed=0, shard=(host, 2), shuffle=False,
                            repeat=False)
        batches = list(ds)
        assert batches[0]["encoder_input_tokens"].shape[0] == 4
        rows.append({tuple(r) for b in batches for r in b["encoder_input_tokens"]})
    assert rows[0].isdisjoint(rows[1])
    assert len(rows[0]) + len(rows[1]) == 60


def test_packing_fills_rows_with_several_examples():
    ds, _ = get_dataset(_qa_task(), split="train", feature_lengths={"inputs": 64, "targets": 48}, batch_size=2,
                        pack=True, converter=EncDecFeatureConverter(pack=True), seed=0, shard=(0, 1))
    b = next(iter(ds))
    assert b["encoder_segment_ids"].max() >= 3
    # teacher forcing restarts at every packed target
    starts = np.diff(b["decoder_segment_ids"], axis=1, prepend=0) != 0
    assert (b["decoder_input_tokens"][starts] == 0).all()


def test_decoder_only_prefix_lm_pipeline():
    ds, _ = get_dataset(_qa_task(), split="train", feature_lengths=LENGTHS, batch_size=2,
                        converter=DecoderOnlyFeatureConverter(), seed=0, shard=(0, 1))
    b = next(iter(ds))
    assert b["decoder_target_tokens"].shape == (2, 40)
    assert set(b) == {"decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                      "decoder_causal_attention"}


def test_mixture_samples_both_tasks():
    mix = Mixture(name="m", tasks=[("a", 1.0), ("b", 1.0)])
    from t5x_lite.data.tasks import TaskRegistry

    qa = _qa_task()
    TaskRegistry.add(Task(**{**qa.__dict__, "name": "a"}), overwrite=True)
    other = [{"q": "zzz", "a": "yyy"}] * 10
    TaskRegistry.add(Task(**{**_qa_task(other).__dict__, "name": "b"}), overwrite=True)
    try:
        ds, _ = get_dataset(mix, split="train", feature_lengths=LENGTHS, batch_size=8,
                            converter=EncDecFeatureConverter(), seed=0, shard=(0, 1))
        first = next(iter(ds))["encoder_input_tokens"]
        zzz = [3 + ord("z")] * 3 + [1]
        n_b = sum(list(r[:4]) == zzz for r in first)
        assert 0 < n_b < 8
    finally:
        TaskRegistry.remove("a")
        TaskRegistry.remove("b")


def test_empty_target_names_file_and_line():
    bad = list(PAIRS[:5]) + [{"q": "why", "a": "  "}]
    ds, _ = get_dataset(_qa_task(bad), split="train", feature_lengths=LENGTHS, batch_size=6,
                        converter=EncDecFeatureConverter(), shuffle=False, repeat=False, shard=(0, 1))
    with pytest.raises(DataError, match=r"mem\.jsonl:6: 'targets' in task 'mem_qa' is empty"):
        list(ds)


def test_long_sequences_are_truncated_and_counted():
    records = [{"q": "x" * 100, "a": "y"}] * 4
    ds, stats = get_dataset(_qa_task(records), split="train", feature_lengths=LENGTHS, batch_size=4,
                            converter=EncDecFeatureConverter(), shuffle=False, repeat=False, shard=(0, 1))
    list(ds)
    assert stats.as_dict()["truncated_tokens"] == {"inputs": 4 * (100 - 31)}


def test_splits_a_task_declares_are_checked_and_tfds_slices_of_them_pass():
    declared = Task(**{**_qa_task().__dict__, "splits": ("train", "validation")})
    seen = []
    declared = Task(**{**declared.__dict__, "source": lambda split: seen.append(split) or ListSource(PAIRS)})
    for split in ("train", "train[:10%]", "train[:50%]+validation"):
        get_dataset(declared, split=split, feature_lengths=LENGTHS, batch_size=2,
                    converter=EncDecFeatureConverter(), repeat=False, shard=(0, 1))
    assert seen == ["train", "train[:10%]", "train[:50%]+validation"]  # passed through to the source as given
    with pytest.raises(DataError, match=r"task 'mem_qa' has no split 'dev'; its splits are train, validation"):
        get_dataset(declared, split="dev", feature_lengths=LENGTHS, batch_size=2,
                    converter=EncDecFeatureConverter(), shard=(0, 1))
    # A task that declares none lets its source decide (TFDS knows validation_mismatched and the like).
    get_dataset(_qa_task(), split="validation_mismatched", feature_lengths=LENGTHS, batch_size=2,
                converter=EncDecFeatureConverter(), repeat=False, shard=(0, 1))


def test_every_task_of_a_mixture_must_fit_the_model_vocabulary():
    from t5x_lite.data.pipeline import check_vocabulary_fits
    from t5x_lite.data.tasks import TaskRegistry

    class BigVocab(CharVocab):
        vocab_size = 5000

    TaskRegistry.add(Task(**{**_qa_task().__dict__, "name": "small_vocab"}), overwrite=True)
    TaskRegistry.add(Task(**{**_qa_task().__dict__, "name": "big_vocab",
                             "output_features": {"inputs": Feature(BigVocab()), "targets": Feature(BigVocab())}}),
                     overwrite=True)
    try:
        mix = Mixture(name="m", tasks=[("small_vocab", 1.0), ("big_vocab", 1.0)])
        check_vocabulary_fits(mix, 5000)
        with pytest.raises(DataError, match=r"task 'big_vocab' has 5000 token ids, more than the model's "
                                             r"vocab_size 4999"):
            check_vocabulary_fits(mix, 4999)
    finally:
        TaskRegistry.remove("small_vocab")
        TaskRegistry.remove("big_vocab")


def _first_batch(task, lengths=LENGTHS):
    ds, _ = get_dataset(task, split="train", feature_lengths=lengths, batch_size=2,
                        converter=EncDecFeatureConverter(), shuffle=False, repeat=False, shard=(0, 1))
    return next(iter(ds))


@pytest.mark.parametrize("targets, message", [
    ([999999, 5], r"mem\.jsonl:1: 'targets' in task 'mem_qa' holds token id 999999, outside the vocabulary's "
                  r"\[0, 359\)"),
    ([-5, 7], r"holds token id -5"),
    ([1.9, 70.7], r"must be text or a list of token ids"),  # floats would truncate to ids, 1 being EOS
    ([], r"is an empty list of token ids"),
    (5, r"must be text or a list of token ids, got 5"),
    (None, r"must be text or a list of token ids, got None"),
])
def test_targets_given_as_ids_are_checked_and_errors_name_the_record(targets, message):
    records = [{"q": "question", "a": targets}] * 2
    with pytest.raises(DataError, match=message):
        _first_batch(_qa_task(records))
    assert list(_first_batch(_qa_task([{"q": "q", "a": [5, 6]}] * 2))["decoder_target_tokens"][0][:3]) == [5, 6, 1]
    weights = np.array([1.0, 0.0, 1.0], np.float32)  # whole-number floats (0/1 weights) are ids too
    assert list(_first_batch(_qa_task([{"q": "q", "a": weights}] * 2))["decoder_target_tokens"][0][:4]) == [1, 0, 1, 1]


def test_a_target_that_encodes_to_no_tokens_is_an_error():
    class DropsNonAscii(CharVocab):
        def encode(self, text):
            return [3 + b for b in text.encode("ascii", "ignore")]

    task = Task(**{**_qa_task([{"q": "q", "a": "\u200b"}] * 2).__dict__,
                   "output_features": {"inputs": Feature(DropsNonAscii()), "targets": Feature(DropsNonAscii())}})
    with pytest.raises(DataError, match=r"mem\.jsonl:1: 'targets' in task 'mem_qa' encodes to no tokens"):
        _first_batch(task)


def test_a_failing_or_wrong_preprocessor_names_the_record():
    def needs_question(ex):
        return {"inputs": ex["question"], "targets": ex["a"]}

    failing = Task(**{**_qa_task().__dict__, "preprocessors": (needs_question,)})
    with pytest.raises(DataError, match=r"mem\.jsonl:1: task 'mem_qa'\'s preprocessor needs_question failed: "
                                        r"KeyError: 'question'"):
        _first_batch(failing)
    as_text = Task(**{**_qa_task().__dict__, "preprocessors": (lambda ex: ex["q"],)})
    with pytest.raises(DataError, match=r"mem\.jsonl:1: .*returned a str, not a dict"):
        _first_batch(as_text)


def test_pretraining_tokens_are_cached_per_task_object_and_records_are_checked():
    other_docs = [{"text": "zzzz " * 40}] * 50
    first = _first_batch(_corpus_task())
    again = Task(**{**_corpus_task().__dict__, "source": lambda split: ListSource(other_docs)})  # same name
    second = _first_batch(again)
    assert not np.array_equal(first["encoder_input_tokens"], second["encoder_input_tokens"])
    no_text = Task(**{**_corpus_task().__dict__, "source": lambda split: ListSource([{"body": "x"}] * 5)})
    with pytest.raises(DataError, match=r"mem\.jsonl:1: task 'mem_corpus' needs text in field 'text', got "
                                        r"nothing \(record keys: \['body'\]\)"):
        _first_batch(no_text)
    with pytest.raises(DataError, match=r"too short for objective"):
        _first_batch(_corpus_task(), {"inputs": 1, "targets": 8})


def test_a_repeated_dataset_reads_past_its_first_epoch(tmp_path):
    # grain's index counts on past the source's length once it repeats; a real source's origin() refuses it
    from t5x_lite.data.sources import JsonlSource

    def dataset(records):
        path = tmp_path / "qa.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        task = Task(**{**_qa_task().__dict__, "source": lambda split: JsonlSource(str(path), fields=("q", "a"))})
        return get_dataset(task, split="train", feature_lengths=LENGTHS, batch_size=2,
                           converter=EncDecFeatureConverter(), seed=0, shard=(0, 1))[0]

    assert len(_batches(dataset(PAIRS[:4]), 8)) == 8  # 16 records of 4: four epochs
    with pytest.raises(DataError, match=r"qa\.jsonl:4: 'targets'"):
        _batches(dataset(PAIRS[:3] + [{"q": "q", "a": [99999]}]), 8)


@pytest.mark.parametrize("repeat", [True, False])
def test_dropped_records_are_counted_and_a_split_that_drops_all_stops(repeat):
    def drop_odd(ex):
        return None if int(ex["q"].split()[1].rstrip("?")) % 2 else {"inputs": ex["q"], "targets": ex["a"]}

    task = Task(**{**_qa_task().__dict__, "preprocessors": (drop_odd,)})
    ds, stats = get_dataset(task, split="train", feature_lengths=LENGTHS, batch_size=3,
                            converter=EncDecFeatureConverter(), seed=0, shuffle=False, repeat=repeat, shard=(0, 1))
    rows = [row for batch in ds for row in batch["encoder_input_tokens"]] if not repeat else None
    if not repeat:
        assert len(rows) == 30 and stats.as_dict()["dropped_examples"] == {"mem_qa": 30}
    else:
        _batches(ds, 40)  # 120 rows: two epochs of 30 kept
        assert stats.as_dict()["dropped_examples"]["mem_qa"] >= 60
    # Every record dropped: under repeat grain would look for one forever (this test would hang).
    unlabelled = Task(**{**_qa_task().__dict__, "preprocessors": (lambda ex: None,)})
    ds, _ = get_dataset(unlabelled, split="test", feature_lengths=LENGTHS, batch_size=4,
                        converter=EncDecFeatureConverter(), seed=0, repeat=repeat, shard=(1, 2))
    with pytest.raises(DataError, match=r"task 'mem_qa' split 'test': its preprocessors dropped every one of the "
                                        r"30 records read \(mem\.jsonl\)"):
        _batches(ds, 1)


def test_only_the_fields_the_model_reads_pass_through():
    from t5x_lite.data.features import EncoderOnlyFeatureConverter

    # an id only some records carry used to fail at batching, in grain's words
    records = [{"q": f"q {i}", "a": "yes" if i % 2 else "no", **({"idx": i} if i % 3 else {})} for i in range(12)]
    task = Task(name="mem_labels", source=lambda split: ListSource(records),
                preprocessors=(lambda ex: {"inputs": ex["q"], "targets": ex["a"], **ex},),
                output_features={"inputs": Feature(VOCAB), "targets": Feature(VOCAB)})
    batch = _first_batch(task)
    assert "idx" not in batch and set(batch) >= {"encoder_input_tokens", "decoder_target_tokens"}
    with_labels = Task(**{**task.__dict__, "output_features": {"inputs": Feature(VOCAB)},
                          "preprocessors": (lambda ex: {"inputs": ex["q"], "label": int(ex["a"] == "yes")},)})
    ds, _ = get_dataset(with_labels, split="train", feature_lengths={"inputs": 16}, batch_size=4,
                        converter=EncoderOnlyFeatureConverter(classification=True), seed=0, shuffle=False,
                        shard=(0, 1))
    np.testing.assert_array_equal(next(iter(ds))["labels"], [0, 1, 0, 1])
    unlabelled = Task(**{**with_labels.__dict__, "preprocessors": (lambda ex: {"inputs": ex["q"]},)})
    ds, _ = get_dataset(unlabelled, split="train", feature_lengths={"inputs": 16}, batch_size=4,
                        converter=EncoderOnlyFeatureConverter(classification=True), seed=0, shard=(0, 1))
    with pytest.raises(DataError, match=r"mem\.jsonl:\d+: task 'mem_labels' produced no 'label' field, which the "
                                        r"model reads \(record keys: \['inputs'\]\)"):
        next(iter(ds))
    # a label must be one class id among the classifier's
    for label, message in [("positive", r"must be one integer class id, got 'positive'"),
                           (0.7, r"must be one integer class id, got 0.7"),
                           ([0, 1], r"must be one integer class id, got \[0, 1\]"),
                           (2, r"is 2, outside the classifier's classes \[0, 2\)")]:
        bad = Task(**{**with_labels.__dict__, "preprocessors": (lambda ex, v=label: {"inputs": ex["q"], "label": v},)})
        ds, _ = get_dataset(bad, split="train", feature_lengths={"inputs": 16}, batch_size=4, seed=0, shard=(0, 1),
                            converter=EncoderOnlyFeatureConverter(classification=True, num_labels=2))
        with pytest.raises(DataError, match=r"mem\.jsonl:\d+: 'label' in task 'mem_labels' " + message):
            next(iter(ds))
    # a regression head (num_labels = 1) reads one finite float; an integer is likely a class id
    scored = Task(**{**with_labels.__dict__, "preprocessors": (lambda ex: {"inputs": ex["q"], "label": 0.25},)})
    regression = EncoderOnlyFeatureConverter(classification=True, num_labels=1)
    ds, _ = get_dataset(scored, split="train", feature_lengths={"inputs": 16}, batch_size=4, seed=0, shard=(0, 1),
                        converter=regression)
    labels = next(iter(ds))["labels"]
    assert labels.dtype == np.float32 and (labels == 0.25).all()
    for label, message in [(1, r"must be one finite float \(num_labels = 1 is a regression head\), got 1; for "
                               r"classes, set BertConfig.num_labels to their number"),
                           (float("nan"), r"must be one finite float .*got nan")]:
        bad = Task(**{**with_labels.__dict__, "preprocessors": (lambda ex, v=label: {"inputs": ex["q"], "label": v},)})
        ds, _ = get_dataset(bad, split="train", feature_lengths={"inputs": 16}, batch_size=4, seed=0, shard=(0, 1),
                            converter=regression)
        with pytest.raises(DataError, match=r"mem\.jsonl:\d+: 'label' in task 'mem_labels' " + message):
            next(iter(ds))
    # a label_weight (default 1; 0: no label) weighs each row's loss, and must be a finite number >= 0
    weighted = Task(**{**with_labels.__dict__, "preprocessors": (
        lambda ex: {"inputs": ex["q"], "label": 0, **({"label_weight": 0.0} if ex["a"] == "yes" else {})},)})
    ds, _ = get_dataset(weighted, split="train", feature_lengths={"inputs": 16}, batch_size=4, seed=0, shard=(0, 1),
                        shuffle=False, converter=EncoderOnlyFeatureConverter(classification=True, num_labels=2))
    weights = next(iter(ds))["label_weights"]
    assert weights.dtype == np.float32 and weights.tolist() == [1, 0, 1, 0]
    for weight in (-1.0, float("inf"), "heavy"):
        bad = Task(**{**with_labels.__dict__, "preprocessors": (
            lambda ex, w=weight: {"inputs": ex["q"], "label": 0, "label_weight": w},)})
        ds, _ = get_dataset(bad, split="train", feature_lengths={"inputs": 16}, batch_size=4, seed=0, shard=(0, 1),
                            converter=EncoderOnlyFeatureConverter(classification=True, num_labels=2))
        with pytest.raises(DataError, match=r"mem\.jsonl:\d+: 'label_weight' in task 'mem_labels' must be one "
                                            r"finite number >= 0 \(0: the row has no label\)"):
            next(iter(ds))
    # a task that says its classes is checked against the head before any record is read
    three = Task(**{**with_labels.__dict__, "num_labels": 3})
    with pytest.raises(DataError, match=r"^task 'mem_labels' has 3 classes, and the classifier's head has "
                                        r"BertConfig.num_labels = 2: set it to 3$"):
        get_dataset(three, split="train", feature_lengths={"inputs": 16}, batch_size=4, seed=0, shard=(0, 1),
                    converter=EncoderOnlyFeatureConverter(classification=True, num_labels=2))


def test_a_task_may_skip_and_count_records_it_cannot_use(caplog):
    records = [{"q": f"q {i}", "a": "" if i % 4 == 0 else f"a {i}"} for i in range(12)]  # 3 empty targets
    strict = _qa_task(records)
    with pytest.raises(DataError, match=r"mem\.jsonl:1: 'targets' in task 'mem_qa' is empty"):
        _first_batch(strict)
    lenient = Task(**{**strict.__dict__, "on_error": "skip"})
    with caplog.at_level("WARNING"):
        ds, stats = get_dataset(lenient, split="train", feature_lengths=LENGTHS, batch_size=3,
                                converter=EncDecFeatureConverter(), shuffle=False, repeat=False, shard=(0, 1))
        assert sum(len(b["encoder_input_tokens"]) for b in ds) == 9
    assert stats.as_dict()["skipped_examples"] == {"mem_qa": 3}
    assert "task 'mem_qa': skipping records that cannot be used (on_error='skip'); the first: mem.jsonl:1" \
        in caplog.text
    nothing = Task(**{**lenient.__dict__, "source": lambda split: ListSource([{"q": "q", "a": ""}] * 4)})
    ds, _ = get_dataset(nothing, split="train", feature_lengths=LENGTHS, batch_size=2,
                        converter=EncDecFeatureConverter(), seed=0, shard=(0, 1))
    with pytest.raises(DataError, match=r"none of the 4 records read \(mem\.jsonl\) can be used"):
        next(iter(ds))
    with pytest.raises(DataError, match=r"on_error must be 'raise' or 'skip', got 'ignore'"):
        Task(**{**strict.__dict__, "on_error": "ignore"})
    # a pretraining corpus too: a document without text is skipped, not fatal
    docs = DOCS[:50] + [{"body": "no text"}] + DOCS[50:]
    corpus = Task(**{**_corpus_task().__dict__, "source": lambda split: ListSource(docs), "on_error": "skip"})
    ds, stats = get_dataset(corpus, split="train", feature_lengths=LENGTHS, batch_size=2,
                            converter=EncDecFeatureConverter(), shuffle=False, repeat=False, shard=(0, 1))
    assert next(iter(ds))["encoder_input_tokens"].shape == (2, LENGTHS["inputs"])
    assert stats.as_dict()["skipped_examples"] == {"mem_corpus": 1}
    assert "task 'mem_corpus': skipping records that cannot be used (on_error='skip'); the first: mem.jsonl:51" \
        in caplog.text
    # a corpus that keeps no document says how each was lost (and no test-split hint: it is pretraining)
    lost = [{"text": "drop me"}, {"body": "no text"}, {"text": "drop me"}, {"body": "no text"}, {"body": "x"}]
    gone = Task(**{**corpus.__dict__, "name": "mem_gone", "source": lambda split: ListSource(lost),
                   "preprocessors": (lambda ex: None if ex.get("text") == "drop me" else ex,)})
    with pytest.raises(DataError, match=r"^task 'mem_gone' split 'train': none of the 5 records read \(mem\.jsonl\) "
                                        r"can be used: 2 dropped by its preprocessors, 3 skipped as bad "
                                        r"\(on_error='skip'\)$"):
        get_dataset(gone, split="train", feature_lengths=LENGTHS, batch_size=2, converter=EncDecFeatureConverter(),
                    shard=(0, 1))
    dropped = Task(**{**gone.__dict__, "name": "mem_dropped", "preprocessors": (lambda ex: None,)})
    with pytest.raises(DataError, match=r"dropped every one of the 5 records read \(mem\.jsonl\)$"):
        get_dataset(dropped, split="train", feature_lengths=LENGTHS, batch_size=2,
                    converter=EncDecFeatureConverter(), shard=(0, 1))


def _streamed_task(docs=DOCS, **kw):
    return Task(**{**_corpus_task().__dict__, "source": lambda split: ListSource(docs), "streaming": True, **kw})


def test_a_streamed_corpus_is_cut_as_read_and_resumes_exactly():
    # T5's reduce_concat_tokens + split_tokens: nothing tokenized up front; pieces carry documents across
    ds, stats = get_dataset(_streamed_task(), split="train", feature_lengths=LENGTHS, batch_size=4,
                            converter=EncDecFeatureConverter(), seed=3, shard=(0, 1))
    first = _batches(ds, 3)
    for batch in first:
        assert batch["encoder_input_tokens"].shape == (4, LENGTHS["inputs"])
        assert (batch["encoder_input_tokens"][:, -1] == VOCAB.eos_id).all()  # full pieces: inputs end in EOS
    again = _batches(ds, 3)  # deterministic for a seed
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["encoder_input_tokens"], b["encoder_input_tokens"])
    it = iter(ds)
    for _ in range(5):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
    tail = [next(it) for _ in range(4)]
    for a, b in zip(tail, _batches(ds, 4, state)):
        np.testing.assert_array_equal(a["decoder_target_tokens"], b["decoder_target_tokens"])


def test_streamed_pieces_concatenate_documents_and_shard_by_host():
    from t5x_lite.data.pipeline import _streamed_pieces
    from t5x_lite.data.features import TruncationStats

    docs = [{"text": "ab" * (i % 5 + 1)} for i in range(30)]  # short documents: pieces span several
    task = _streamed_task(docs)
    raw = task.objective.required_raw_length(LENGTHS)
    pieces = list(_streamed_pieces(task, "train", LENGTHS, shard=(0, 1), seed=0, shuffle=False, repeat=False,
                                   stats=TruncationStats()))
    text = np.concatenate([VOCAB.encode(d["text"]) for d in docs])
    assert len(pieces) == len(text) // raw  # the partial last piece is dropped
    np.testing.assert_array_equal(np.concatenate(pieces), text[: len(pieces) * raw])
    hosts = [np.concatenate(list(_streamed_pieces(task, "train", LENGTHS, shard=(h, 2), seed=0, shuffle=False,
                                                  repeat=False, stats=TruncationStats()))) for h in (0, 1)]
    mine = np.concatenate([VOCAB.encode(d["text"]) for d in docs[0::2]])
    np.testing.assert_array_equal(hosts[0], mine[: len(hosts[0])])  # host 0 reads documents 0, 2, 4, ...
    with pytest.raises(DataError, match=r"task 'mem_corpus' has no split 'tset'; its splits are train"):
        _streamed_pieces(_streamed_task(docs, splits=("train",)), "tset", LENGTHS, shard=(0, 1), seed=0, shuffle=False, repeat=False,
                         stats=TruncationStats())
    blank = _streamed_task([{"text": ""}] * 5)
    ds, _ = get_dataset(blank, split="train", feature_lengths=LENGTHS, batch_size=2,
                        converter=EncDecFeatureConverter(), seed=0, shard=(0, 1))
    with pytest.raises(DataError, match=r"none of the 5 records read \(mem\.jsonl\) can be used: 5 empty once "
                                        r"tokenized"):
        next(iter(ds))
    # a corpus whose every document is dropped stops instead of looking forever
    gone = _streamed_task(docs, preprocessors=(lambda ex: None,))
    ds, _ = get_dataset(gone, split="train", feature_lengths=LENGTHS, batch_size=2, converter=EncDecFeatureConverter(),
                        seed=0, shard=(0, 1))
    with pytest.raises(DataError, match="dropped every one of the 30 records"):
        next(iter(ds))


def test_a_mixture_with_a_streamed_task_mixes_streams():
    from t5x_lite.data.tasks import TaskRegistry

    TaskRegistry.add(_streamed_task(name="mem_stream"), overwrite=True)
    TaskRegistry.add(_qa_task(), overwrite=True)
    try:
        ds, _ = get_dataset(Mixture("mem_mix", [("mem_stream", 1.0), ("mem_qa", 1.0)]), split="train",
                            feature_lengths=LENGTHS, batch_size=4, converter=EncDecFeatureConverter(), seed=0,
                            shard=(0, 1))
        rows = [row for b in _batches(ds, 6) for row in b["encoder_input_tokens"]]
        questions = sum(list(r[:8]) == VOCAB.encode("question") for r in rows)
        assert 0 < questions < len(rows)
    finally:
        TaskRegistry.remove("mem_stream")
        TaskRegistry.remove("mem_qa")


@pytest.mark.parametrize("mixture,shuffle", [(False, False), (True, False), (False, True)])
def test_a_streamed_corpus_resumes_through_json_at_every_position(mixture, shuffle, monkeypatch):
    # grain keeps the cut in progress as tuples and marks "none" with (-1, -1); a JSON state gives lists,
    # which once lost the next document (at the stream's start and wherever a piece ended a document).
    # Shuffled, the pieces pass a window (small here, so that resumes land inside, across and after windows).
    from t5x_lite.data import pipeline
    from t5x_lite.data.tasks import TaskRegistry

    monkeypatch.setattr(pipeline, "STREAM_SHUFFLE_WINDOW", 5)

    raw = _corpus_task().objective.required_raw_length(LENGTHS)
    # some documents exactly one piece long (a piece ends where a document ends), others shorter
    docs = [{"text": chr(97 + i % 26) * (raw if i % 3 else raw // 3)} for i in range(40)]
    TaskRegistry.add(_streamed_task(docs, name="mem_stream"), overwrite=True)
    TaskRegistry.add(_qa_task(), overwrite=True)
    try:
        item = Mixture("mem_mix", [("mem_stream", 2.0), ("mem_qa", 1.0)]) if mixture else "mem_stream"
        ds, _ = get_dataset(item, split="train", feature_lengths=LENGTHS, batch_size=2,
                            converter=EncDecFeatureConverter(), seed=1, shard=(0, 1), shuffle=shuffle)
        reference = _batches(ds, 14)
        # shuffled, every other batch: pieces 0, 4, 8, ... still stop at each offset in a window of 5
        for k in range(0, 12, 2 if shuffle else 1):
            it = iter(ds)
            for _ in range(k):
                next(it)
            resumed = _batches(ds, 2, json.loads(json.dumps(it.get_state())))
            for a, b in zip(reference[k:k + 2], resumed):
                np.testing.assert_array_equal(a["encoder_input_tokens"], b["encoder_input_tokens"], err_msg=str(k))
    finally:
        TaskRegistry.remove("mem_stream")
        TaskRegistry.remove("mem_qa")


def test_feature_lengths_are_checked_by_name_and_against_the_objective(caplog):
    def make(lengths, converter=EncDecFeatureConverter(), task=None):
        return get_dataset(task or _corpus_task(), split="train", feature_lengths=lengths, batch_size=2,
                           converter=converter, seed=0, shard=(0, 1))

    with pytest.raises(DataError, match=r"unknown feature 'target'; did you mean 'targets'\?"):
        make({"inputs": 32, "targets": 8, "target": 16})
    with pytest.raises(DataError, match=r"unknown feature 'input'; did you mean 'inputs'\?"):
        make({"input": 32, "targets": 8})  # the typo is named, not the length it leaves missing
    with pytest.raises(DataError, match=r"has no length for 'targets', which EncDecFeatureConverter needs"):
        make({"inputs": 32})
    with pytest.raises(DataError, match=r"the length of 'inputs' must be a positive int, got 0"):
        make({"inputs": 0, "targets": 8})
    # span corruption of 128 inputs needs 32 targets: a DataError saying so, naming the task
    with pytest.raises(DataError, match=r"task 'mem_corpus', feature lengths \{'inputs': 128, 'targets': 8\}: "
                                        r"span_3_15_u_u: .* make the targets length at least \d+ or the inputs "
                                        r"shorter"):
        make({"inputs": 128, "targets": 8})
    # BERT reads inputs only: a targets length (copied from a T5 config) is accepted, with a warning
    from t5x_lite.data.features import EncoderOnlyFeatureConverter
    from t5x_lite.data.pipeline import checked_feature_lengths

    assert checked_feature_lengths({"inputs": 16}, EncoderOnlyFeatureConverter()) == {"inputs": 16}
    assert "does not read" not in caplog.text
    get_dataset(_corpus_task("bert_mlm"), split="train", feature_lengths={"inputs": 16, "targets": 8}, batch_size=2,
                converter=EncoderOnlyFeatureConverter(), seed=0, shard=(0, 1))
    assert "does not read" not in caplog.text  # the pipeline leaves the warning to its callers, said once
    checked_feature_lengths({"inputs": 16, "targets": 4}, EncoderOnlyFeatureConverter())
    assert "EncoderOnlyFeatureConverter does not read 'targets'; that length is ignored" in caplog.text


def test_a_causal_lm_reads_the_inputs_before_the_targets_with_loss_on_the_targets_only():
    # The T5 paper's "LM" on a supervised task: inputs ++ targets under one causal mask (not the targets alone).
    ds, _ = get_dataset(_qa_task(), split="train", feature_lengths={"inputs": 32, "targets": 8}, batch_size=2,
                        converter=DecoderOnlyFeatureConverter(prefix_lm=False), seed=0, shard=(0, 1))
    batch = next(iter(ds))
    assert "decoder_causal_attention" not in batch and batch["decoder_target_tokens"].shape == (2, 40)
    row, weights = batch["decoder_target_tokens"][0], batch["decoder_loss_weights"][0]
    text = bytes(int(t) - 3 for t in row[weights > 0] if t > 2).decode()
    prompt = bytes(int(t) - 3 for t in row[:int(np.argmax(weights > 0))] if t > 2).decode()
    assert prompt.startswith("question ") and text.startswith("answer ")


@pytest.mark.parametrize("objective, converter, lengths, message", [
    # an objective for another kind of model: named before any data is read, with the objectives that fit
    ("bert_mlm", EncDecFeatureConverter(), LENGTHS, "objective 'bert_mlm' makes inputs, mlm_targets, mlm_weights, "
     "not the targets that an encoder-decoder model reads: use an objective made for it (span_3_15_u_u"),
    ("span_3_15_u_u", EncoderOnlyFeatureConverter(), {"inputs": 32}, "objective 'span_3_15_u_u' makes inputs, "
     "targets, not the mlm_targets, mlm_weights that an encoder-only (BERT) model reads: use an objective made for "
     "it (bert_mlm)"),
    ("bert_mlm", EncoderOnlyFeatureConverter(classification=True, num_labels=2), {"inputs": 32},
     "makes inputs, mlm_targets, mlm_weights, not the label that an encoder-only (BERT) classifier reads: use an "
     "objective made for it (none: a classifier fine-tunes on a labelled task)"),
    # an LM's encoder would read nothing but padding
    ("lm", EncDecFeatureConverter(), LENGTHS, "objective 'lm' makes targets, not the inputs that an "
     "encoder-decoder model reads"),
    # a decoder-only LM given an inputs length would pad every row by it
    ("lm", DecoderOnlyFeatureConverter(), LENGTHS, "objective 'lm' makes targets, not the inputs that a "
     "decoder-only model reads: drop 'inputs' from TASK_FEATURE_LENGTHS"),
    # a prefix LM's prefix needs a length (it used to reach padding with "exceeds feature length")
    ("prefix_lm", DecoderOnlyFeatureConverter(), {"targets": 32}, "objective 'prefix_lm' makes inputs, which "
     "TASK_FEATURE_LENGTHS gives no length (it has targets): add one, e.g. {'inputs': 32, 'targets': 32}"),
    ("span_3_15_u_u", DecoderOnlyFeatureConverter(prefix_lm=False), {"targets": 32}, "makes inputs, which "
     "TASK_FEATURE_LENGTHS gives no length"),
    # a classifier reads a label that no pretraining objective makes (it failed at the first batch)
    ("span_3_15_u_u", EncoderOnlyFeatureConverter(classification=True, num_labels=2), {"inputs": 32},
     "objective 'span_3_15_u_u' makes inputs, targets, not the label that an encoder-only (BERT) classifier reads"),
    # the hint drops a length only where the model still gets what the objective makes (not BERT's MLM here)
    ("bert_mlm", DecoderOnlyFeatureConverter(), LENGTHS, "objective 'bert_mlm' makes inputs, mlm_targets, "
     "mlm_weights, not the targets that a decoder-only model reads: use an objective made for it (lm with"),
])
def test_an_objective_must_make_what_the_model_reads(objective, converter, lengths, message):
    with pytest.raises(DataError) as info:
        get_dataset(_corpus_task(objective), split="train", feature_lengths=lengths, batch_size=2,
                    converter=converter, seed=0, shard=(0, 1))
    assert str(info.value).startswith("task 'mem_corpus': ") and message in str(info.value), info.value


def test_an_lm_task_with_optional_inputs_mixes_with_a_task_with_inputs_on_a_decoder_only_model(caplog):
    # The bundled LM task declares its inputs optional, so a mixture (or an eval_task) beside a task with inputs
    # reads it as targets only; an encoder would read nothing, so there it is still refused.
    from t5x_lite.data.tasks import TaskRegistry

    lm = _corpus_task("lm")
    lm = Task(**{**lm.__dict__, "name": "mem_lm", "output_features": {
        "inputs": Feature(VOCAB, add_eos=False, required=False), "targets": Feature(VOCAB)}})
    TaskRegistry.add(lm, overwrite=True)
    TaskRegistry.add(_qa_task(), overwrite=True)
    try:
        ds, _ = get_dataset(Mixture("mem_mix", [("mem_lm", 1.0), ("mem_qa", 1.0)]), split="train",
                            feature_lengths=LENGTHS, batch_size=8,
                            converter=DecoderOnlyFeatureConverter(prefix_lm=False), seed=0, shard=(0, 1))
        rows = [row for b in _batches(ds, 2) for row in b["decoder_target_tokens"]]
        questions = sum(list(r[:8]) == VOCAB.encode("question") for r in rows)
        documents = sum(int((r != 0).sum()) == 8 for r in rows)  # 7 tokens of text + EOS from position 0
        assert questions > 0 and documents > 0 and questions + documents == len(rows)
        assert "padding" not in caplog.text  # beside the QA task, its rows' empty inputs are not waste
        mix = Mixture("mem_mix", [("mem_lm", 1.0), ("mem_qa", 1.0)])
        check_task_fits(mix, LENGTHS, DecoderOnlyFeatureConverter(), absent="error")
        # alone, every row's inputs are padding: get_dataset reads it (as evaluation may); train refuses it
        get_dataset(lm, split="train", feature_lengths=LENGTHS, batch_size=2,
                    converter=DecoderOnlyFeatureConverter(prefix_lm=False), seed=0, shard=(0, 1))
        assert "padding" not in caplog.text
        message = ("task 'mem_lm': objective 'lm' makes no inputs, so the 32 'inputs' positions of every row it "
                   "fills are padding: drop 'inputs' from TASK_FEATURE_LENGTHS if nothing else needs it, or mix the "
                   "task with one that has inputs")
        check_task_fits(lm, LENGTHS, DecoderOnlyFeatureConverter(), absent="warn")
        assert message in caplog.text, caplog.text
        with pytest.raises(DataError, match=re.escape(message)):
            check_task_fits(lm, LENGTHS, DecoderOnlyFeatureConverter(), absent="error")
        with pytest.raises(DataError, match="objective 'lm' makes targets, not the inputs that an encoder-decoder"):
            get_dataset(lm, split="train", feature_lengths=LENGTHS, batch_size=2,
                        converter=EncDecFeatureConverter(), seed=0, shard=(0, 1))
    finally:
        TaskRegistry.remove("mem_lm")
        TaskRegistry.remove("mem_qa")


@pytest.mark.parametrize("objective, converter, lengths", [
    ("lm", DecoderOnlyFeatureConverter(), {"targets": 32}),
    ("prefix_lm", DecoderOnlyFeatureConverter(), {"inputs": 16, "targets": 16}),
    ("span_3_15_u_u", DecoderOnlyFeatureConverter(), {"inputs": 32, "targets": 16}),
    ("bert_mlm", EncoderOnlyFeatureConverter(), {"inputs": 32}),
    ("prefix_lm", EncDecFeatureConverter(), LENGTHS),
])
def test_objectives_that_fit_the_model_pass_the_check(objective, converter, lengths):
    ds, _ = get_dataset(_corpus_task(objective), split="train", feature_lengths=lengths, batch_size=2,
                        converter=converter, seed=0, shard=(0, 1))
    assert next(iter(ds))


def test_full_text_targets_shorter_than_the_inputs_are_named_once(caplog):
    # iid_15_m_f's targets are the whole text, so a 32 / 8 pair cuts the text to 7 tokens in 32 input positions.
    task = _corpus_task("iid_15_m_f")
    for _ in range(2):  # an evaluation every N steps builds the dataset again: said once
        ds, _ = get_dataset(task, split="train", feature_lengths=LENGTHS, batch_size=2,
                            converter=EncDecFeatureConverter(), seed=0, shard=(0, 1))
    assert (next(iter(ds))["encoder_input_tokens"] != 0).sum(axis=1).max() <= 8
    assert caplog.text.count("objective 'iid_15_m_f' takes 7 text tokens per example, so at most 8 of the 32 "
                             "'inputs' positions hold text") == 1, caplog.text
    assert "{'inputs': 32, 'targets': 32}" in caplog.text
    caplog.clear()
    get_dataset(_corpus_task("iid_15_u_u"), split="train", feature_lengths=LENGTHS, batch_size=2,
                converter=EncDecFeatureConverter(), seed=0, shard=(0, 1))
    assert "positions hold text" not in caplog.text  # span-style targets leave the inputs full


@pytest.mark.parametrize("converter", [EncDecFeatureConverter(), DecoderOnlyFeatureConverter()],
                         ids=["encdec", "decoder_only"])
def test_count_cut_says_per_row_what_truncation_took(converter):
    # Evaluation stops at max_examples while grain reads ahead: per-row counts let it count only the rows used.
    ds, stats = get_dataset(_qa_task(), split="train", feature_lengths={"inputs": 8, "targets": 8}, batch_size=4,
                            converter=converter, shuffle=False, repeat=False, count_cut=True, shard=(0, 1))
    batches = list(ds)
    cut = {f: np.concatenate([b[f"{f}_tokens_cut"] for b in batches]) for f in ("inputs", "targets")}
    # EOS leaves room for 7 bytes: "question 2??" (12) loses 5, "answer 2" (8) loses 1
    assert cut["inputs"][:3].tolist() == [3, 4, 5] and cut["targets"][:3].tolist() == [1, 1, 1]
    counts = stats.as_dict()
    assert int(cut["inputs"].sum()) == counts["truncated_tokens"]["inputs"]
    assert int((cut["inputs"] > 0).sum()) == counts["truncated_examples"]["inputs"] == len(PAIRS)


def test_a_converter_of_ones_own_may_size_a_feature_of_its_own():
    # A third text feature (a retrieved passage, say) read by a converter that declares it in length_keys.
    class WithContext(EncDecFeatureConverter):
        length_keys = ("inputs", "targets", "context")

        def trim_lengths(self, lengths):
            return {**super().trim_lengths(lengths), "context": lengths["context"]}

        def __call__(self, batch):
            return {**super().__call__(batch), "context_tokens": batch["context"]}

    task = Task(name="mem_qa_context", source=lambda split: ListSource(PAIRS),
                preprocessors=(lambda ex: {"inputs": ex["q"], "targets": ex["a"], "context": ex["q"] + " " + ex["a"]},),
                output_features={"inputs": Feature(VOCAB), "targets": Feature(VOCAB), "context": Feature(VOCAB)})
    lengths = {"inputs": 32, "targets": 8, "context": 12}
    ds, _ = get_dataset(task, split="train", feature_lengths=lengths, batch_size=2, converter=WithContext(), seed=0,
                        shard=(0, 1))
    batch = next(iter(ds))
    assert batch["context_tokens"].shape == (2, 12) and (batch["context_tokens"] > 0).any()
    with pytest.raises(DataError, match=r"unknown feature 'contxt'; did you mean 'context'\?"):
        get_dataset(task, split="train", feature_lengths={"inputs": 32, "targets": 8, "contxt": 12}, batch_size=2,
                    converter=WithContext(), seed=0, shard=(0, 1))
    with pytest.raises(DataError, match=r"unknown feature 'context'"):  # the stock converter reads no context
        get_dataset(task, split="train", feature_lengths=lengths, batch_size=2, converter=EncDecFeatureConverter(),
                    seed=0, shard=(0, 1))
