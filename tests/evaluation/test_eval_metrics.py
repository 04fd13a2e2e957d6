"""Evaluation metrics against hand-computed values; invalid predictions; registry; lazy imports."""

import math
import subprocess
import sys

import pytest

from t5x_lite.evaluation import metrics as M


def test_accuracy_two_of_three():
    assert M.accuracy([0, 1, 1], [0, 1, 0]) == {"accuracy": pytest.approx(200 / 3), "invalid_predictions": 0.0}
    assert M.accuracy(["yes", "no"], ["yes", "yes"])["accuracy"] == pytest.approx(50.0)


def test_accuracy_counts_invalid_as_wrong():
    # -1 is the postprocessors' "could not parse" label; it is wrong even where no class matches it.
    out = M.accuracy([0, 1, 1, 0], [0, -1, 1, -1])
    assert out == {"accuracy": 50.0, "invalid_predictions": 2.0}
    # None and NaN too, and for string labels (no type error from sklearn).
    assert M.accuracy(["a", "b", "c"], ["a", None, float("nan")]) == {
        "accuracy": pytest.approx(100 / 3),
        "invalid_predictions": 2.0,
    }


def test_f1_binary():
    # tp=2 (idx 0, 1), fp=1 (idx 3), fn=1 (idx 2): P = R = 2/3 -> F1 = 2/3.
    assert M.f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])["f1"] == pytest.approx(200 / 3)


def test_f1_invalid_is_opposite_of_target():
    # Invalid on a positive -> false negative; on a negative -> false positive (T5's f1_score_with_invalid).
    # tp=1, fn=1 (idx 1), fp=1 (idx 2): P = R = 1/2.
    out = M.f1([1, 1, 0, 0], [1, -1, -1, 0])
    assert out == {"f1": pytest.approx(50.0), "invalid_predictions": 2.0}
    assert M.f1([1, 1, 0, 0], [1, 1, 1, 0])["f1"] == M.f1([1, 1, 0, 0], [1, 1, -1, 0])["f1"]
    assert M.f1([1, 1, 0, 0], [1, 0, 0, 0])["f1"] == M.f1([1, 1, 0, 0], [1, -1, 0, 0])["f1"]


def test_macro_f1():
    # class 0: tp=1 fp=0 fn=1 -> 2/3; class 1: tp=1 fp=1 fn=0 -> 2/3; class 2: tp=1 -> 1.
    assert M.macro_f1([0, 0, 1, 2], [0, 1, 1, 2])["macro_f1"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 1) / 3)


def test_macro_f1_invalid_is_a_miss_not_a_class():
    # The invalid prediction is a false negative for class 0 and no class of its own:
    # class 0: tp=1 fn=1 -> 2/3; class 1: tp=1 -> 1. Mean over the two real classes only.
    out = M.macro_f1([0, 0, 1], [0, -1, 1])
    assert out == {"macro_f1": pytest.approx(100 * (2 / 3 + 1) / 2), "invalid_predictions": 1.0}
    # Explicit labels count a class nobody predicted or needed as 0.
    assert M.macro_f1([0, 1], [0, 1], labels=[0, 1, 2])["macro_f1"] == pytest.approx(200 / 3)


def test_matthews_corrcoef_known_confusion_matrix():
    # tp=3 tn=2 fp=1 fn=0: (3*2 - 1*0) / sqrt(4 * 3 * 3 * 2) = 6 / sqrt(72).
    targets = [1, 1, 1, 0, 0, 0]
    predictions = [1, 1, 1, 0, 0, 1]
    expected = 100 * 6 / math.sqrt(72)
    assert M.matthews_corrcoef(targets, predictions)["matthews_corrcoef"] == pytest.approx(expected)
    assert M.matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1])["matthews_corrcoef"] == pytest.approx(100.0)
    assert M.matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0])["matthews_corrcoef"] == pytest.approx(-100.0)


def test_matthews_corrcoef_invalid_is_wrong():
    perfect = M.matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1])["matthews_corrcoef"]
    out = M.matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, -1])
    assert out["invalid_predictions"] == 1.0
    assert out["matthews_corrcoef"] < perfect
    assert math.isfinite(out["matthews_corrcoef"])


def test_pearson_and_spearman():
    assert M.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == {"pearson": pytest.approx(100.0), "invalid_predictions": 0.0}
    assert M.pearson([1, 2, 3, 4], [4, 3, 2, 1])["pearson"] == pytest.approx(-100.0)
    # Monotone but not linear: Spearman 100, Pearson below.
    assert M.spearman([1, 2, 3, 4], [1, 4, 9, 100])["spearman"] == pytest.approx(100.0)
    assert M.pearson([1, 2, 3, 4], [1, 4, 9, 100])["pearson"] < 99
    # Hand-computed: deviations x: [-1, 0, 1], y: [-1, 1, 0] -> r = 1 / sqrt(2 * 2) = 0.5.
    assert M.pearson([1, 2, 3], [1, 3, 2])["pearson"] == pytest.approx(50.0)


def test_correlation_invalid_predictions_are_wrong():
    # With the targets' mean as filler, [1, 2, 3] vs [1, NaN, 3] would score 100; ours must not.
    out = M.pearson([1, 2, 3], [1, float("nan"), 3])
    assert out["invalid_predictions"] == 1.0
    assert out["pearson"] < 99
    # The filler for target 2 (>= median 2) is the lowest valid prediction, 1: pearson([1,2,3], [1,1,3]).
    assert out["pearson"] == pytest.approx(M.pearson([1, 2, 3], [1, 1, 3])["pearson"])
    # Strings and None the postprocessor let through are invalid too, never a crash.
    out = M.spearman([1, 2, 3, 4], [1, "oops", None, 4])
    assert out["invalid_predictions"] == 2.0 and out["spearman"] < 100
    # All invalid or constant predictions: undefined correlation scored 0, not NaN.
    assert M.pearson([1, 2, 3], [float("nan")] * 3) == {"pearson": 0.0, "invalid_predictions": 3.0}
    assert M.spearman([1, 2, 3], [5, 5, 5])["spearman"] == 0.0


def test_squad_normalization():
    assert M.normalize_answer("The Cat!") == "cat"
    assert M.normalize_answer("  An   apple, a DAY ") == "apple day"
    assert M.normalize_answer("theory") == "theory"  # articles only as whole words
    assert M.normalize_answer("the   the") == ""


def test_exact_match_and_squad():
    targets = [["The Cat!", "a dog"], "Paris", "blue whale"]
    predictions = ["cat", "paris.", "whale"]
    assert M.exact_match(targets, predictions) == {"exact_match": pytest.approx(200 / 3), "invalid_predictions": 0.0}
    out = M.squad(targets, predictions)
    # third: pred {whale} vs ref {blue, whale}: P=1, R=1/2 -> F1=2/3.
    assert out["em"] == pytest.approx(200 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3)
    # Max over references: the second reference matches better.
    assert M.squad([["red fish", "big red fish"]], ["big red fish"])["f1"] == pytest.approx(100.0)


def test_squad_invalid_prediction():
    out = M.squad(["cat", "dog"], ["cat", None])
    assert out == {"em": 50.0, "f1": 50.0, "invalid_predictions": 1.0}
    # "The" normalizes to nothing, as "" does: an invalid prediction must still score 0
    assert M.squad([["The"]], [None])["em"] == 0.0 and M.exact_match(["the"], [None])["exact_match"] == 0.0


def test_f1_with_text_labels_is_an_error_not_zero():
    with pytest.raises(ValueError, match=r"positive label 1 is none of the labels \['negative', 'positive'\]"):
        M.f1(["positive", "negative"], ["positive", "negative"])
    assert M.f1(["yes", "no"], ["yes", "no"], pos_label="yes")["f1"] == 100.0
    assert M.f1([0, 0], [0, 0])["f1"] == 0.0  # numbers with no positive example: 0, as sklearn


def test_mean_3class_f1_counts_a_class_nobody_saw():
    # T5's mean_multiclass_f1(num_classes=3), i.e. sklearn with labels=range(3): class 2 scores 0.
    out = M.mean_3class_f1([0, 1, 0, 1], [0, 1, 1, 1])
    assert out == {"mean_3class_f1": pytest.approx(100 * (2 / 3 + 4 / 5 + 0) / 3), "invalid_predictions": 0.0}


def test_multirc_scores_options_by_f1a_and_questions_by_exact_match():
    # question (0, 1): both options right; (0, 2): one of three wrong, another unreadable (-1, wrong)
    targets = [{"group": [0, 1], "value": 1}, {"group": [0, 1], "value": 0},
               {"group": [0, 2], "value": 1}, {"group": [0, 2], "value": 1}, {"group": [0, 2], "value": 0}]
    predictions = [1, 0, 1, -1, 1]
    out = M.multirc(targets, predictions)
    # positives: tp 2 (options 0, 2), fn 1 (the unreadable one), fp 1 (option 4): F1 = 2*2 / (2*2 + 1 + 1)
    assert out == {"f1a": pytest.approx(100 * 4 / 6), "exact_match": 50.0, "invalid_predictions": 1.0}
    assert M.multirc(targets, [{"value": v} for v in predictions]) == out
    with pytest.raises(ValueError, match="target 0 is 1, not {'group': question"):
        M.multirc([1, 0], [1, 0])


def test_a_target_that_is_not_a_number_is_an_error_for_correlations():
    with pytest.raises(ValueError, match="target 1 is nan, not a finite number"):
        M.pearson([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0])


def test_bleu():
    sentences = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine stitches today"]
    assert M.bleu(sentences, sentences)["bleu"] == pytest.approx(100.0)
    disjoint = ["alpha beta gamma delta epsilon zeta eta", "one two three four five six seven"]
    assert M.bleu(sentences, disjoint)["bleu"] < 1.0
    # Several references per example, even a different number each: the matching one counts.
    multi = [["something else entirely here", sentences[0]], [sentences[1]]]
    assert M.bleu(multi, sentences)["bleu"] == pytest.approx(100.0)
    out = M.bleu(sentences, [sentences[0], None])
    assert out["invalid_predictions"] == 1.0 and 0 < out["bleu"] < 100


def test_rouge():
    texts = ["the cats sat on the mat . they were happy", "rain fell all day"]
    out = M.rouge(texts, texts)
    assert out == {
        "rouge1": pytest.approx(100.0),
        "rouge2": pytest.approx(100.0),
        "rougeLsum": pytest.approx(100.0),
        "invalid_predictions": 0.0,
    }
    # No stemming, as T5's rouge: "cats" is not "cat" (P = R = 1/2); with use_stemmer it is.
    assert M.rouge(["cats sat"], ["cat sat"])["rouge1"] == pytest.approx(50.0)
    assert M.rouge(["cats sat"], ["cat sat"], use_stemmer=True)["rouge1"] == pytest.approx(100.0)
    # Hand-computed rouge1: ref {w x y z}, pred {w x}: P=1, R=1/2 -> F=2/3.
    assert M.rouge(["w x y z"], ["w x"])["rouge1"] == pytest.approx(200 / 3)
    out = M.rouge(texts, [texts[0], None])
    assert out["invalid_predictions"] == 1.0 and out["rouge1"] == pytest.approx(50.0)


def test_rouge_lsum_uses_sentences():
    # rougeLsum takes the union LCS over sentences, so reordering whole sentences costs nothing,
    # while plain LCS over the flat text would lose one sentence.
    target = "the cat sat down . the dog ran off"
    prediction = "the dog ran off . the cat sat down"
    assert M.rouge([target], [prediction])["rougeLsum"] == pytest.approx(100.0)
    assert M.rouge([target], [prediction], score_keys=("rougeL",))["rougeL"] < 70


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        M.accuracy([0, 1], [0])


def test_registry_and_typo_suggestion():
    assert set(M.METRICS) == {
        "accuracy", "f1", "macro_f1", "mean_3class_f1", "multirc", "matthews_corrcoef", "pearson", "spearman",
        "exact_match", "squad", "bleu", "rouge",
    }  # fmt: skip
    assert M.get_metric("rouge") is M.rouge
    with pytest.raises(ValueError, match="Did you mean 'accuracy'"):
        M.get_metric("acuracy")
    with pytest.raises(ValueError, match="Did you mean 'matthews_corrcoef'"):
        M.get_metric("mathews_corrcoef")
    with pytest.raises(ValueError, match="Did you mean 'spearman'"):
        M.get_metric("Spearman")
    with pytest.raises(ValueError, match="unknown metric 'zzz'. Known metrics"):
        M.get_metric("zzz")


def test_evaluate_merges():
    out = M.evaluate([0, 1, 1, 0], [0, 1, -1, 0], ["accuracy", "f1", "matthews_corrcoef"])
    assert set(out) == {"accuracy", "f1", "matthews_corrcoef", "invalid_predictions"}
    assert out["accuracy"] == 75.0 and out["invalid_predictions"] == 1.0
    # An unknown name fails before any metric runs.
    with pytest.raises(ValueError, match="Did you mean 'pearson'"):
        M.evaluate([1.0], [1.0], ["accuracy", "pearsn"])
    # Two metrics disagreeing on a key ("f1") is an error, not an overwrite.
    with pytest.raises(ValueError, match="'f1'"):
        M.evaluate([1, 0], [1, 1], ["f1", "squad"])


def test_import_is_light():
    code = (
        "import sys, t5x_lite.evaluation, t5x_lite.evaluation.metrics\n"
        "heavy = [m for m in ('sklearn', 'scipy', 'sacrebleu', 'rouge_score', 'nltk') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
