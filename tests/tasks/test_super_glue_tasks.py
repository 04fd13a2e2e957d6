"""SuperGLUE MultiRC, ReCoRD and WSC in the T5 paper's format: their text, their split-dependent training
examples, their postprocessors, and evaluation end to end under TFDS mock data."""

import dataclasses
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import t5x_lite.tasks  # noqa: F401
from t5x_lite.data.sources import DataError
from t5x_lite.data.tasks import TaskRegistry
from t5x_lite.tasks.tfds_tasks import (dpr_text, multirc_postprocessor, multirc_text, multirc_to_class,
                                       record_best_candidate, record_per_answer, record_per_candidate,
                                       record_postprocessor, record_text, record_to_class, wnli_text,
                                       wsc_correct_referent_only, wsc_postprocessor, wsc_text, wsc_to_class)
from tests.tfds_records import as_tfds


def _tfds():
    return pytest.importorskip("tensorflow_datasets")  # only the tests under mock data need it


def test_multirc_text_is_t5s_order_without_markup_and_keeps_the_question():
    ex = {"question": "Who ran?", "answer": "Bob", "label": 1, "idx": {"paragraph": 3, "question": 7, "answer": 1},
          "paragraph": "<b>Sent 1: </b>Bob ran.<br><b>Sent 2: </b>Ann sat.<br>"}
    out = multirc_text(ex)
    assert out["inputs"] == "multirc question: Who ran? answer: Bob paragraph: Sent 1: Bob ran. Sent 2: Ann sat. "
    assert out["targets"] == "True" and out["group"] == [3, 7]
    assert out["idx"] == ex["idx"]  # what the leaderboard's submission file is keyed by
    # the test split's hidden label: T5's "<unk>" target, kept for predictions, left out of evaluation
    hidden = multirc_text(dict(ex, label=-1))
    assert hidden["targets"] == "<unk>" and multirc_postprocessor("<unk>", example=hidden, is_target=True) is None
    assert multirc_postprocessor("True", example={"group": [3, 7]}, is_target=True) == {"group": [3, 7], "value": 1}
    assert multirc_postprocessor("False") == 0 and multirc_postprocessor("maybe") == -1


def test_multirc_for_a_bert_classifier_classifies_each_answer_option():
    ex = {"question": "Who ran?", "answer": "Bob", "label": 1, "idx": {"paragraph": 3, "question": 7, "answer": 1},
          "paragraph": "<b>Sent 1: </b>Bob ran.<br><b>Sent 2: </b>Ann sat.<br>"}
    text = multirc_to_class()(ex)
    assert text == {"inputs": multirc_text(ex)["inputs"], "label": 1, "label_weight": 1.0, "group": [3, 7],
                    "idx": ex["idx"]}
    # with BERT's own tokenizer: the paragraph and "question answer" as a pair, as SuperGLUE's BERT baseline reads them
    pair = multirc_to_class(pairs=True)(dict(ex, label=-1))
    assert pair["inputs"] == ("Sent 1: Bob ran. Sent 2: Ann sat. ", "Who ran? Bob")
    assert pair["label"] == 0 and pair["label_weight"] == 0  # a hidden label: predicted, not scored
    # a class id goes through the postprocessor as it is; a target carries its question for the metric
    assert multirc_postprocessor(1, example={"group": [3, 7]}, is_target=True) == {"group": [3, 7], "value": 1}
    assert multirc_postprocessor(0) == 0


MULTIRC_RECORDS = [{"paragraph": "<b>Sent 1: </b>Bob ran.<br>", "question": f"Who ran {q}?", "answer": answer,
                    "label": label, "idx": {"paragraph": 0, "question": q, "answer": a}}
                   for q, a, answer, label in [(0, 0, "Bob", 1), (0, 1, "Ann", 0), (1, 2, "Bob", -1), (1, 3, "Ann", -1),
                                               (2, 4, "Bob", 1)]]


def _multirc_data_source(builder, split, **kwargs):  # stands in for tfds.data_source("super_glue/multirc")
    return [as_tfds(r) for r in MULTIRC_RECORDS]


def test_a_bert_classifier_predicts_multirc_rows_without_labels_and_scores_the_others():
    from t5x_lite.evaluation.evaluate import evaluate
    from t5x_lite.models.config import BertConfig
    from t5x_lite.models.model import EncoderOnlyClassificationModel

    bert = EncoderOnlyClassificationModel(config=BertConfig(vocab_size=8000, hidden_size=16, num_layers=1,
                                                            num_heads=2, intermediate_size=32,
                                                            max_position_embeddings=64))
    kw = dict(model=bert, params=bert.init(jax.random.key(0), bert.dummy_batch(1, {"inputs": 48})),
              feature_lengths={"inputs": 48}, batch_size=4, split="test")
    with _tfds().testing.mock_data(as_data_source_fn=_multirc_data_source):
        metrics, rows = evaluate(task="super_glue_multirc_classification", **kw)
    assert metrics["unlabelled_examples"] == 2 and metrics["num_examples"] == 5 and "f1a" in metrics
    assert [r["targets"] for r in rows] == [1, 0, None, None, 1]
    assert [r["example"]["idx"]["answer"] for r in rows] == [0, 1, 2, 3, 4]
    # scored over the two questions that have labels only: exact match is 0, 50 or 100 percent
    assert metrics["exact_match"] in (0.0, 50.0, 100.0)


RECORD_QUERIES = [{"passage": "Bob met Ann in Rome.\n@highlight\nA meeting", "query": f"@placeholder saw Rome {q}.",
                   "entities": entities, "answers": answers, "idx": {"passage": 0, "query": q}}
                  for q, entities, answers in [(0, ["Bob", "Ann", "Rome"], ["Bob"]), (1, ["Ann", "Bob"], ["Ann"]),
                                               (2, ["Rome", "Bob", "Rome"], ["Rome"])]]


def _record_data_source(builder, split, **kwargs):  # stands in for tfds.data_source("super_glue/record")
    return [as_tfds(dict(r, answers=[]) if split == "test" else r) for r in RECORD_QUERIES]


def test_a_bert_classifier_answers_record_queries_with_their_likeliest_candidate():
    from t5x_lite.evaluation.evaluate import _classify, evaluate
    from t5x_lite.models.config import BertConfig
    from t5x_lite.models.model import EncoderOnlyClassificationModel

    bert = EncoderOnlyClassificationModel(config=BertConfig(vocab_size=8000, hidden_size=16, num_layers=1,
                                                            num_heads=2, intermediate_size=32,
                                                            max_position_embeddings=64))
    kw = dict(model=bert, params=bert.init(jax.random.key(0), bert.dummy_batch(1, {"inputs": 48})),
              feature_lengths={"inputs": 48}, batch_size=4)
    task = TaskRegistry.get("super_glue_record_classification")
    with _tfds().testing.mock_data(as_data_source_fn=_record_data_source):
        metrics, rows = evaluate(task=task.name, **kw)
        candidates = _classify(task=task, split="validation", max_examples=None, **kw)
        test_metrics, test_rows = evaluate(task=task.name, split="test", **kw)
    # the classifier read 7 candidates (Rome once in query 2) and answered each of the 3 queries once
    assert metrics["num_examples"] == 7 and len(candidates) == 7 and {"em", "f1", "loss"} <= set(metrics)
    assert [r["example"]["idx"]["query"] for r in rows] == [0, 1, 2]
    assert [r["targets"] for r in rows] == [["Bob"], ["Ann"], ["Rome"]]
    assert rows == record_best_candidate(candidates)
    for row, query in zip(rows, RECORD_QUERIES):
        assert row["prediction"] in query["entities"]
    expected = sum(r["prediction"] == q["answers"][0] for r, q in zip(rows, RECORD_QUERIES)) / 3 * 100
    assert metrics["em"] == pytest.approx(expected)
    # the test split: every query answered, nothing scored
    assert test_metrics["unlabelled_examples"] == 7 and "em" not in test_metrics
    assert [r["targets"] for r in test_rows] == [None] * 3
    assert [r["prediction"] for r in test_rows] == [r["prediction"] for r in rows]


def test_record_text_trains_on_each_answer_and_scores_against_all():
    ex = {"query": "@placeholder won the race.", "entities": ["Bob", "Ann"], "answers": ["Bob", "Bobby"],
          "passage": "Bob ran fast.\n@highlight\nA race\n@highlight\nHe won", "idx": {"passage": 0, "query": 0}}
    out = record_text(ex)
    assert out["inputs"] == ("record query: @placeholder won the race. entities: Bob, Ann passage: Bob ran fast. "
                             "A race. He won")
    assert out["targets"] == "Bob" and out["answers"] == ["Bob", "Bobby"]
    assert [record_text(e)["targets"] for e in record_per_answer(ex)] == ["Bob", "Bobby"]
    hidden = record_text(dict(ex, answers=[]))  # the test split: no answers, kept for predictions
    assert hidden["targets"] == "<unk>" and hidden["idx"] == ex["idx"] and record_per_answer(dict(ex, answers=[])) == []
    assert record_postprocessor("<unk>", example=hidden, is_target=True) is None
    assert record_postprocessor("Bob") == "Bob"
    assert record_postprocessor("x", example={"answers": ["Bob", "Bobby"]}, is_target=True) == ["Bob", "Bobby"]


def test_record_for_a_bert_classifier_fills_the_query_with_each_candidate():
    ex = {"query": "@placeholder won the race.", "entities": ["Bob", "Ann", "Bob"], "answers": ["Bob", "Bobby"],
          "passage": "Bob ran fast.\n@highlight\nA race\n@highlight\nHe won", "idx": {"passage": 0, "query": 0}}
    candidates = record_per_candidate(ex)
    assert [c["entity"] for c in candidates] == ["Bob", "Ann"]  # each entity's text once
    bob, ann = (record_to_class()(c) for c in candidates)
    assert bob == {"inputs": "record query: Bob won the race. passage: Bob ran fast. A race. He won", "label": 1,
                   "label_weight": 1.0, "idx": ex["idx"], "entity": "Bob", "answers": ["Bob", "Bobby"]}
    assert ann["label"] == 0 and ann["label_weight"] == 1
    # with BERT's own tokenizer: the passage and the filled query as a pair
    assert record_to_class(pairs=True)(candidates[1])["inputs"] == ("Bob ran fast. A race. He won",
                                                                    "Ann won the race.")
    hidden = record_to_class()(dict(candidates[0], answers=[]))  # the test split: predicted, not scored
    assert hidden["label"] == 0 and hidden["label_weight"] == 0
    with pytest.raises(ValueError, match=r"the ReCoRD query 'Bob won.' has no @placeholder"):
        record_to_class()(dict(candidates[0], query="Bob won."))


def test_record_best_candidate_predicts_the_likeliest_answer_of_each_query():
    from t5x_lite.evaluation.evaluate import _labeller

    def row(query, entity, log_p0, log_p1, answers):  # a binary classifier's row
        return {"inputs": f"{entity} won.", "targets": int(entity in answers), "prediction": int(log_p1 > log_p0),
                "score": max(log_p0, log_p1), "class_log_probs": [log_p0, log_p1],
                "example": {"idx": {"passage": 0, "query": query}, "entity": entity, "answers": answers}}

    rows = [row(0, "Bob", np.log(0.6), np.log(0.4), ["Ann"]), row(0, "Ann", np.log(0.45), np.log(0.55), ["Ann"]),
            # no candidate predicted 1, each sure of it: class 1's log-probabilities still rank them (logits 6
            # against -20 and -10; float32's p(0) would be 1.0 for both)
            row(1, "Cy", -5e-12, -26.0, []), row(1, "Di", -4.5e-7, -16.0, []),
            row(0, "Ed", np.log(0.99), np.log(0.01), ["Ann"])]  # a query's candidates need not be adjacent
    combined = record_best_candidate(rows)
    assert [(r["prediction"], r["targets"], r["inputs"]) for r in combined] == [("Ann", ["Ann"], "Ann won."),
                                                                                 ("Di", None, "Di won.")]
    assert combined[0]["score"] == pytest.approx(np.log(0.55)) and combined[1]["score"] == -16.0
    assert combined[0]["example"] == {"idx": {"passage": 0, "query": 0}, "answers": ["Ann"]}
    # read by the task's postprocessor: the entity, scored against all the answers; none: unlabelled
    label = _labeller(TaskRegistry.get("super_glue_record_classification"))
    assert label(combined[0], False) == "Ann" and label(combined[0], True) == ["Ann"]
    assert label(combined[1], True) is None


def test_wsc_for_a_bert_classifier_reads_the_marked_sentence_and_the_candidate():
    ex = _wsc("Mitchell asked Tom if he could lend some money.", "he", 4)
    assert wsc_to_class()(ex) == {"inputs": "wsc: Mitchell asked Tom if *he* could lend some money. candidate: Tom",
                                  "label": 1, "label_weight": 1.0, "idx": 0}
    pair = wsc_to_class(pairs=True)(dict(ex, label=-1))
    assert pair["inputs"] == ("Mitchell asked Tom if *he* could lend some money.", "Tom")
    assert pair["label"] == 0 and pair["label_weight"] == 0  # a hidden label: predicted, not scored
    assert wsc_to_class()(dict(ex, label=0))["label"] == 0  # a wrong candidate trains too
    task = TaskRegistry.get("super_glue_wsc_classification")
    assert task.num_labels == 2 and task.metric_names == ("accuracy",)


def _wsc(text, pronoun, index, referent="Tom", label=1):
    return {"text": text, "span1_text": referent, "span1_index": 2, "span2_text": pronoun, "span2_index": index,
            "label": label, "idx": 0}


def test_wsc_text_marks_the_pronoun():
    out = wsc_text(_wsc("Mitchell asked Tom if he could lend some money.", "he", 4))
    assert out == {"inputs": "wsc: Mitchell asked Tom if *he* could lend some money.", "targets": "Tom", "label": 1,
                   "idx": 0}
    hidden = wsc_text(_wsc("Mitchell asked Tom if he could lend some money.", "he", 4, label=-1))
    assert wsc_postprocessor("Tom", example={**hidden, "targets_pretokenized": "Tom"}, is_target=True) is None
    # the two WSC records T5 special-cases: punctuation glued to the pronoun, and an index one word early
    glued = wsc_text(_wsc('John laughed out quite loud. "Good for him," he said.', "him", 7))
    assert glued["inputs"] == 'wsc: John laughed out quite loud. "Good for *him* ," he said.'
    early = wsc_text(_wsc("Some day they might want to use it , but really", "it", 6))
    assert early["inputs"] == "wsc: Some day they might want to use *it* , but really"
    # T5's two special cases in full, with the strings its _wsc_inputs gives them (X marked as wsc_simple does)
    pony = ('The boy continued to whip the pony , and eventually the pony threw him over. John laughed out quite '
            'loud. "Good for him," he said. ')
    assert wsc_text(_wsc(pony, "him", 22))["inputs"] == (
        'wsc: The boy continued to whip the pony , and eventually the pony threw him over. John laughed out quite '
        'loud. "Good for *him* ," he said.')
    pebble = ("When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic pebble in "
              "an iron safe . Some day they might want to use it , but really for now, what more could they wish for?")
    assert wsc_text(_wsc(pebble, "it", 30))["inputs"] == "wsc: " + pebble.replace("use it ,", "use *it* ,")
    # at the index itself, glued punctuation wins over the same pronoun nearby
    assert wsc_text(_wsc("Tom saw him and him, too", "him", 4))["inputs"] == "wsc: Tom saw him and *him* , too"
    with pytest.raises(ValueError, match="the pronoun 'it' is not at word 1"):
        wsc_text(_wsc("Mitchell asked Tom if he could lend some money.", "it", 1))
    assert wsc_correct_referent_only(_wsc("a b", "b", 1, label=0)) == []
    assert len(wsc_correct_referent_only(_wsc("a b", "b", 1, label=1))) == 1


@pytest.mark.parametrize("prediction, referent, expected", [
    ("Tom", "Tom", 1), ("the dog", "The dog", 1), ("fuzzy bunny", "bunny", 1), ("bunny", "the fuzzy bunny", 1),
    ("Bob", "Bob's hat", 0), ("Mitchell", "Tom", 0), ("  ", "Tom", -1), ("the", "Tom", -1),
])
def test_wsc_postprocessor_is_t5s_referent_match(prediction, referent, expected):
    assert wsc_postprocessor(prediction, example={"targets_pretokenized": referent, "label": 1}) == expected
    assert wsc_postprocessor(referent, example={"targets_pretokenized": referent, "label": 0}, is_target=True) == 0


WSC_RECORDS = [
    _wsc("Mitchell asked Tom if he could lend some money.", "he", 4, "Tom", 1),
    _wsc("Mitchell asked Tom if he could lend some money.", "he", 4, "Mitchell", 0),
    _wsc("The trophy does not fit in the suitcase because it is too big.", "it", 9, "the trophy", 1),
    _wsc("The trophy does not fit in the suitcase because it is too big.", "it", 9, "the suitcase", 0),
    _wsc("Ann thanked Mary because she had helped.", "she", 4, "Mary", 1),
]


def _wsc_data_source(builder, split, **kwargs):  # stands in for tfds.data_source("super_glue/wsc.fixed")
    return [as_tfds(r) for r in WSC_RECORDS]


def _tiny_model():
    from t5x_lite.models.config import T5Config
    from t5x_lite.models.model import EncoderDecoderModel

    config = T5Config(vocab_size=8000, d_model=32, d_ff=48, num_heads=2, d_kv=16, num_encoder_layers=1,
                      num_decoder_layers=1, mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                      dropout_rate=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=16)
    model = EncoderDecoderModel(config=config)
    return model, model.init(jax.random.key(0), model.dummy_batch(1, {"inputs": 8, "targets": 4}))


def test_wsc_trains_on_correct_referents_and_evaluates_every_candidate():
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate

    task = TaskRegistry.get("super_glue_wsc")
    with _tfds().testing.mock_data(as_data_source_fn=_wsc_data_source):
        train = task.source("train")
        assert [r["label"] for r in train] == [1, 1, 1] and "correct referents only" in train.description
        assert [r["label"] for r in task.source("train[:3]")] == [1, 1, 1]  # a slice of it too
        with pytest.raises(DataError, match="split 'train\\+validation' joins its training split, whose examples"):
            task.source("train+validation")
        model, params = _tiny_model()
        metrics, rows = evaluate(model=model, params=params, task=task, feature_lengths={"inputs": 32, "targets": 8},
                                 batch_size=2, decode=DecodeOptions(max_decode_length=4))
    assert len(rows) == 5 and [r["example"]["label"] for r in rows] == [1, 0, 1, 0, 1]
    assert rows[2]["targets"] == "the trophy" and "*it*" in rows[2]["inputs"]
    # the metric compares the referent match with the label, as wsc_postprocessor says
    expected = np.mean([wsc_postprocessor(r["prediction"], example={**r["example"], "targets_pretokenized":
                                                                    r["targets"]}) == r["example"]["label"]
                        for r in rows]) * 100
    assert metrics["accuracy"] == pytest.approx(expected)


def test_multirc_and_record_evaluate_under_mock_data():
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate

    model, params = _tiny_model()
    with _tfds().testing.mock_data(num_examples=6):
        record_train = TaskRegistry.get("super_glue_record").source("train")
        record_validation = TaskRegistry.get("super_glue_record").source("validation")
        assert len(record_train) == sum(len(r["answers"]) for r in record_train.base) > len(record_train.base)
        assert len(record_validation) == len(record_train.base)
        for task, keys in [("super_glue_multirc", ("f1a", "exact_match")), ("super_glue_record", ("em", "f1"))]:
            metrics, rows = evaluate(model=model, params=params, task=task,
                                     feature_lengths={"inputs": 48, "targets": 6}, batch_size=4,
                                     decode=DecodeOptions(max_decode_length=4))
            assert len(rows) == 6 and all(0 <= metrics[k] <= 100 for k in keys), metrics
            assert "example" in rows[0] and json.dumps(rows[0])  # the eval fields reach the predictions file
        # a BERT classifier reads MultiRC's answer options as classes, scored by the same metric
        from t5x_lite.models.config import BertConfig
        from t5x_lite.models.model import EncoderOnlyClassificationModel

        bert = EncoderOnlyClassificationModel(config=BertConfig(vocab_size=8000, hidden_size=16, num_layers=1,
                                                                num_heads=2, intermediate_size=32,
                                                                max_position_embeddings=64))
        bert_params = bert.init(jax.random.key(0), bert.dummy_batch(1, {"inputs": 48}))
        metrics, rows = evaluate(model=bert, params=bert_params, task="super_glue_multirc_classification",
                                 feature_lengths={"inputs": 48}, batch_size=4)
    assert len(rows) == 6 and all(0 <= metrics[k] <= 100 for k in ("f1a", "exact_match")), metrics
    assert {r["prediction"] for r in rows} <= {0, 1} and set(rows[0]["example"]) == {"group", "idx"}
    # the metric reads the classes: predicting every option's own label scores 100
    from t5x_lite.evaluation.evaluate import _labeller
    from t5x_lite.evaluation.metrics import evaluate as score

    label = _labeller(TaskRegistry.get("super_glue_multirc_classification"))
    perfect = [dict(r, prediction=r["targets"]) for r in rows]
    assert score([label(r, True) for r in perfect], [label(r, False) for r in perfect],
                 ["multirc"])["exact_match"] == 100.0


def test_a_missing_eval_field_names_the_record():
    from t5x_lite.data.features import EncDecFeatureConverter, Feature
    from t5x_lite.data.pipeline import get_dataset
    from t5x_lite.data.tasks import Task
    from t5x_lite.tasks.bundled import vocabulary

    class Records(list):
        description = "mem.jsonl"

        def origin(self, i):
            return f"mem.jsonl:{i + 1}"

    task = Task(name="mem_fields", source=lambda split: Records([{"inputs": "a b", "targets": "c"}] * 4),
                output_features={"inputs": Feature(vocabulary()), "targets": Feature(vocabulary())},
                eval_fields=("group",))
    ds, _ = get_dataset(task, split="validation", feature_lengths={"inputs": 8, "targets": 4}, batch_size=2,
                        converter=EncDecFeatureConverter(), shuffle=False, repeat=False, shard=(0, 1),
                        keep_text=True)
    with pytest.raises(DataError, match=r"mem.jsonl:1: task 'mem_fields' produced no 'group' field, which it keeps"):
        next(iter(ds))
    with pytest.raises(DataError, match="eval_fields must be a sequence of field names"):
        Task(name="bad", source=lambda split: [], output_features={}, eval_fields="group")


def test_evaluating_a_mixture_reports_each_task_and_the_benchmark_average():
    from t5x_lite.data.tasks import Mixture
    from t5x_lite.errors import ConfigError
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate, predict

    model, params = _tiny_model()
    mixture = Mixture(name="mini", tasks=(("super_glue_multirc", 1.0), ("super_glue_record", 3.0),
                                          ("dpr_simple", 1.0)))  # no validation split: left out
    kw = dict(model=model, params=params, feature_lengths={"inputs": 48, "targets": 6}, batch_size=4,
              decode=DecodeOptions(max_decode_length=4), max_examples=3)
    with _tfds().testing.mock_data(num_examples=5):
        metrics, rows = evaluate(task=mixture, **kw)
        alone, _ = evaluate(task="super_glue_record", **kw)
    assert [r["task"] for r in rows] == ["super_glue_multirc"] * 3 + ["super_glue_record"] * 3
    assert metrics["super_glue_record/em"] == alone["em"] and metrics["num_examples"] == 6
    assert not any(k.startswith("dpr_simple") for k in metrics)
    multirc = (metrics["super_glue_multirc/f1a"] + metrics["super_glue_multirc/exact_match"]) / 2
    record = (metrics["super_glue_record/em"] + metrics["super_glue_record/f1"]) / 2
    assert metrics["average"] == pytest.approx((multirc + record) / 2)
    with pytest.raises(ConfigError, match="'super_glue_proportional' is a mixture; this reads one task at a time"):
        predict(task="super_glue_proportional", **kw)
    # a TFDS split expression names the split; DPR, not a SuperGLUE task, is never in the benchmark's average
    only = Mixture(name="only", tasks=(("super_glue_record", 1.0), ("dpr_simple", 1.0)),
                   evaluate_tasks=("super_glue_record",))
    with _tfds().testing.mock_data(num_examples=5):
        sliced, _ = evaluate(task=dataclasses.replace(mixture, name="sliced"), **dict(kw, split="train[:2]"))
        tested, _ = evaluate(task=only, **dict(kw, split="test"))
    assert {k.split("/")[0] for k in sliced if "/" in k} == {"super_glue_multirc", "super_glue_record", "dpr_simple"}
    assert {k.split("/")[0] for k in tested if "/" in k} == {"super_glue_record"}
    with pytest.raises(DataError, match="mixture 'dpr_only': none of the tasks it evaluates has a 'validation'"):
        evaluate(task=Mixture(name="dpr_only", tasks=(("dpr_simple", 1.0),)), **kw)
    for chosen in (("super_glue_wsc",), ()):
        with pytest.raises(DataError, match="evaluate_tasks must name some of its tasks"):
            Mixture(name="bad", tasks=(("dpr_simple", 1.0),), evaluate_tasks=chosen)


def test_t5s_proportional_mixtures_are_registered_with_its_rates():
    from t5x_lite.data.tasks import get_task_or_mixture

    glue = dict(get_task_or_mixture("glue_proportional").tasks)
    assert "glue_wnli" not in glue and glue["glue_mnli"] == 392_702 and len(glue) == 8
    mixture = get_task_or_mixture("super_glue_proportional")
    super_glue = {t.name: r for t, r in mixture.resolved()}
    assert super_glue["super_glue_record"] == 138_854 and super_glue["super_glue_wsc"] == 259
    assert super_glue["dpr_simple"] == 1_322 and len(super_glue) == 9
    assert "dpr_simple" not in mixture.evaluate_tasks and len(mixture.evaluate_tasks) == 8
    # a mixture is found by its name in a fresh process, before any task was looked up
    code = ("import t5x_lite.tasks; from t5x_lite.data.tasks import get_task_or_mixture as g; "
            "print(len(g('glue_proportional').tasks))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "8"


def test_infer_refuses_a_mixture_before_reading_the_checkpoint(tmp_path):
    from t5x_lite.errors import ConfigError
    from t5x_lite.evaluation.run import infer_checkpoint

    with pytest.raises(ConfigError, match="'glue_proportional' is a mixture; this reads one task at a time"):
        infer_checkpoint(checkpoint=str(tmp_path / "nothing here"), task="glue_proportional",
                         feature_lengths={"inputs": 8, "targets": 4})


def test_dpr_is_cast_as_wsc():
    ex = {"sentence": "Bob asked Tom if he can lend some money.", "pronoun": "he", "candidates": ["Bob", "Tom"],
          "label": 1}
    assert dpr_text(ex) == {"inputs": "wsc: Bob asked Tom if *he* can lend some money.", "targets": "Tom",
                            "label": 1}
    # the first occurrence after a space, before a space, "." or ","; none (a sentence-initial one): unmarked
    assert dpr_text(dict(ex, sentence="Ann met him, and Bob met him.", pronoun="him", label=0))["inputs"] == (
        "wsc: Ann met *him*, and Bob met him.")
    assert dpr_text(dict(ex, sentence="Ann saw them.", pronoun="them"))["inputs"] == "wsc: Ann saw *them*."
    assert dpr_text(dict(ex, sentence="He left.", pronoun="He"))["inputs"] == "wsc: He left."
    with _tfds().testing.mock_data(num_examples=3):
        task = TaskRegistry.get("dpr_simple")
        rows = [dpr_text(r) for r in task.source("train")]
    assert len(rows) == 3 and all(r["inputs"].startswith("wsc: ") for r in rows)


def _oracle_decoding(monkeypatch, vocab):
    """Decoding replaced by the target text itself, so every metric must come out perfect."""
    import t5x_lite.decoding as decoding

    def predict_batch(model, params, batch, *, max_decode_length, **kwargs):
        rows = [vocab.encode(str(t))[:max_decode_length] for t in batch["targets_pretokenized"]]
        tokens = np.zeros((len(rows), 1, max_decode_length), np.int32)
        for i, ids in enumerate(rows):
            tokens[i, 0, :len(ids)] = ids
        return tokens, np.zeros((len(rows), 1), np.float32)

    monkeypatch.setattr(decoding, "predict_batch", predict_batch)
    monkeypatch.setattr("t5x_lite.evaluation.evaluate._model_inputs", lambda model, batch: batch)


def test_perfect_predictions_score_perfectly(monkeypatch):
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate
    from t5x_lite.tasks.bundled import vocabulary

    _oracle_decoding(monkeypatch, vocabulary())
    model, params = _tiny_model()
    kw = dict(model=model, params=params, feature_lengths={"inputs": 48, "targets": 32}, batch_size=4,
              decode=DecodeOptions(max_decode_length=32))
    with _tfds().testing.mock_data(num_examples=6):
        multirc, rows = evaluate(task="super_glue_multirc", **kw)
        record, _ = evaluate(task="super_glue_record", **kw)
    positives = any(r["targets"] == "True" for r in rows)
    assert multirc["exact_match"] == 100.0 and multirc["f1a"] == (100.0 if positives else 0.0)
    assert record["em"] == 100.0 and record["f1"] == 100.0
    with _tfds().testing.mock_data(as_data_source_fn=_wsc_data_source):
        wsc, _ = evaluate(task="super_glue_wsc", **kw)
    # naming the candidate is right exactly when the candidate is the referent: 3 of the 5 records
    assert wsc["accuracy"] == pytest.approx(60.0) and wsc["invalid_predictions"] == 0


def test_which_postprocessors_get_the_example():
    import functools

    from t5x_lite.evaluation.evaluate import _keyword_parameters

    def seqio(text, example=None, is_target=False):
        return text

    def example_only(text, *, example):
        return text

    assert _keyword_parameters(seqio) == {"example", "is_target"}
    assert _keyword_parameters(functools.partial(seqio, is_target=True)) == {"example", "is_target"}
    assert _keyword_parameters(lambda text, **kw: text) == {"example", "is_target"}
    assert _keyword_parameters(example_only) == {"example"}
    assert _keyword_parameters(float) == set() and _keyword_parameters(str.strip) == set()
    assert _keyword_parameters(lambda text: text) == set()


AX_RECORDS = [{"premise": f"A man plays guitar number {i}.", "hypothesis": "A person plays music.", "label": -1,
               "idx": i} for i in range(5)]  # GLUE's AX: no public labels


def _ax_data_source(builder, split, **kwargs):  # stands in for tfds.data_source("glue/ax")
    return [as_tfds(r) for r in AX_RECORDS]


def test_diagnostic_sets_are_cast_as_the_task_they_diagnose(tmp_path):
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate

    model, params = _tiny_model()
    kw = dict(model=model, params=params, split="test", feature_lengths={"inputs": 48, "targets": 4}, batch_size=4,
              decode=DecodeOptions(max_decode_length=4))
    with _tfds().testing.mock_data(as_data_source_fn=_ax_data_source):
        ax, rows = evaluate(task="glue_ax", **kw)
    # read as MNLI (T5's cast), every row predicted and keyed by idx for the leaderboard, none scored
    assert rows[0]["inputs"] == "mnli hypothesis: A person plays music. premise: A man plays guitar number 0."
    assert [r["example"]["idx"] for r in rows] == [0, 1, 2, 3, 4] and {r["targets"] for r in rows} == {"<unk>"}
    assert ax == {"unlabelled_examples": 5, "num_examples": 5}
    with _tfds().testing.mock_data(num_examples=6):  # AX-b and AX-g: labelled in TFDS's files
        axb, rows = evaluate(task="super_glue_axb", **kw)
        assert rows[0]["inputs"].startswith("rte hypothesis: ") and " premise: " in rows[0]["inputs"]
        assert {"matthews_corrcoef", "accuracy", "loss"} <= set(axb) and "unlabelled_examples" not in axb
        axg, rows = evaluate(task="super_glue_axg", **kw)
        assert rows[0]["inputs"].startswith("rte hypothesis: ") and "accuracy" in axg
    with pytest.raises(DataError, match="split 'validation'"):
        evaluate(task="super_glue_axb", **dict(kw, split="validation"))
    # for a BERT classifier fine-tuned on RTE: AX-b and AX-g as RTE pairs of classes
    from t5x_lite.models.config import BertConfig
    from t5x_lite.models.model import EncoderOnlyClassificationModel

    bert = EncoderOnlyClassificationModel(config=BertConfig(vocab_size=8000, hidden_size=16, num_layers=1,
                                                            num_heads=2, intermediate_size=32,
                                                            max_position_embeddings=64, num_labels=2))
    bert_params = bert.init(jax.random.key(0), bert.dummy_batch(1, {"inputs": 48}))
    mnli_bert = bert.replace(config=dataclasses.replace(bert.config, num_labels=3))
    with _tfds().testing.mock_data(as_data_source_fn=_ax_data_source):  # AX for a classifier fine-tuned on MNLI
        mnli_params = mnli_bert.init(jax.random.key(0), bert.dummy_batch(1, {"inputs": 48}))
        ax, rows = evaluate(model=mnli_bert, params=mnli_params, task="glue_ax_classification", split="test",
                            feature_lengths={"inputs": 48}, batch_size=4)
    assert ax == {"unlabelled_examples": 5, "num_examples": 5}
    assert [r["example"]["idx"] for r in rows] == [0, 1, 2, 3, 4] and {r["targets"] for r in rows} == {None}
    assert {r["prediction"] for r in rows} <= {0, 1, 2}
    with _tfds().testing.mock_data(num_examples=6):
        for task in ("super_glue_axb_classification", "super_glue_axg_classification"):
            metrics, rows = evaluate(model=bert, params=bert_params, task=task, split="test",
                                     feature_lengths={"inputs": 48}, batch_size=4)
            assert len(rows) == 6 and "accuracy" in metrics and rows[0]["inputs"].startswith("rte hypothesis: ")


WNLI_RECORDS = [  # WNLI-style pairs: the hypothesis restates the premise's clause with the pronoun replaced
    ("The fish ate the worm. It was tasty.", "The worm was tasty.", 1),
    ("Mark told Pete many lies about himself, which Pete included in his book. He should have been more skeptical.",
     "Mark should have been more skeptical.", 0),
    ("I stuck a pin through a carrot. When I pulled the pin out, it had a hole.", "The carrot had a hole.", 1),
    ("Steve follows Fred's example in everything. He influences him hugely.", "Steve influences him hugely.", 0),
    ("Tom gave Ralph a lift to school so he wouldn't have to walk. His mother was grateful.",
     "Ralph's mother was grateful.", -1),
]


def test_wnli_is_read_as_wsc_as_t5_reads_it(caplog):
    # T5's wnli_simple docstring: 'The fish ate the worm. It was tasty.' / 'The worm was tasty.' ->
    # 'wsc: The fish ate the worm. *It* was tasty.' -> 'The worm'
    out = [wnli_text({"sentence1": p, "sentence2": h, "label": label, "idx": i})
           for i, (p, h, label) in enumerate(WNLI_RECORDS)]
    assert out[0] == {"inputs": "wsc: The fish ate the worm. *It* was tasty.", "targets": "The worm", "label": 1,
                      "idx": 0}
    # the pronoun whose neighbours the hypothesis repeats most ("He ... should have been", not "his book")
    assert out[1]["inputs"].endswith("in his book. *He* should have been more skeptical.")
    assert out[1]["targets"] == "Mark"
    assert out[2]["inputs"].endswith("pulled the pin out, *it* had a hole.") and out[2]["targets"] == "The carrot"
    assert out[3]["inputs"] == "wsc: Steve follows Fred's example in everything. *He* influences him hugely."
    assert out[3]["targets"] == "Steve"
    # a possessive pronoun's candidate loses its possessive ending; a hidden label stays -1
    assert out[4]["inputs"].endswith("*His* mother was grateful.") and out[4]["targets"] == "Ralph"
    assert out[4]["label"] == -1
    # a candidate read with words before it starts at an article
    assert wnli_text({"sentence1": "The fish ate the worm. It was tasty.", "label": 1, "idx": 8,
                      "sentence2": "Yesterday the worm was tasty."})["targets"] == "the worm"
    # nothing repeated around any pronoun: T5's target is empty (never the referent); ours "<unk>", said
    with caplog.at_level("WARNING"):
        lost = wnli_text({"sentence1": "The cat sat. It purred loudly.", "sentence2": "Dogs bark.", "label": 0,
                          "idx": 7})
    assert lost["targets"] == "<unk>" and lost["inputs"] == "wsc: The cat sat. *It* purred loudly."
    assert "WNLI record idx 7: no candidate found in the hypothesis 'Dogs bark.'" in caplog.text
    assert wsc_postprocessor("the cat", example={"label": 0, "targets_pretokenized": "<unk>"}) == 0
    with pytest.raises(ValueError, match="no pronoun"):
        wnli_text({"sentence1": "The fish ate the worm.", "sentence2": "The worm was eaten.", "label": 0, "idx": 9})


def _wnli_data_source(builder, split, **kwargs):  # stands in for tfds.data_source("glue/wnli")
    return [as_tfds({"sentence1": p, "sentence2": h, "label": label, "idx": i})
            for i, (p, h, label) in enumerate(WNLI_RECORDS)]


def test_glue_wnli_simple_evaluates_with_the_wsc_postprocessor_and_never_trains():
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate

    model, params = _tiny_model()
    kw = dict(model=model, params=params, feature_lengths={"inputs": 48, "targets": 8}, batch_size=2,
              decode=DecodeOptions(max_decode_length=4))
    with _tfds().testing.mock_data(as_data_source_fn=_wnli_data_source):
        metrics, rows = evaluate(task="glue_wnli_simple", split="validation", **kw)
        with pytest.raises(DataError, match="split 'train'"):
            evaluate(task="glue_wnli_simple", split="train", **kw)
    assert metrics["num_examples"] == 5 and metrics["unlabelled_examples"] == 1
    assert [r["targets"] for r in rows] == ["The worm", "Mark", "The carrot", "Steve", "Ralph"]
    expected = np.mean([wsc_postprocessor(r["prediction"], example={**r["example"], "targets_pretokenized":
                                                                    r["targets"]}) == r["example"]["label"]
                        for r in rows[:4]]) * 100
    assert metrics["accuracy"] == pytest.approx(expected)
