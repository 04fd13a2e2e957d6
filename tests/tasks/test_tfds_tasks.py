"""TFDS tasks under tfds.testing.mock_data (offline): C4 span corruption, GLUE, SuperGLUE."""

import subprocess
import sys

import numpy as np
import pytest

import t5x_lite.tasks  # noqa: F401
from t5x_lite.data.features import EncDecFeatureConverter
from t5x_lite.data.pipeline import get_dataset
from t5x_lite.data.tasks import TaskRegistry
from t5x_lite.tasks.bundled import vocabulary
from t5x_lite.tasks.tfds_tasks import GLUE, SUPER_GLUE, label_postprocessor, text_to_text, to_class

tfds = pytest.importorskip("tensorflow_datasets")


def _batch(task, lengths, n=4):
    ds, _ = get_dataset(task, split="train", feature_lengths=lengths, batch_size=n,
                        converter=EncDecFeatureConverter(), seed=0, shard=(0, 1))
    return next(iter(ds))


@pytest.mark.parametrize("task", ["glue_sst2", "glue_mnli", "super_glue_boolq", "super_glue_copa"])
def test_glue_style_tasks_under_mock_data(task):
    with tfds.testing.mock_data(num_examples=8):
        batch = _batch(task, {"inputs": 64, "targets": 8})
    vocab = vocabulary()
    labels = set(dict(GLUE, **SUPER_GLUE)[task.split("_", 1)[1].replace("glue_", "")][1])
    targets = {vocab.decode(r) for r in batch["decoder_target_tokens"]}
    assert targets <= labels
    prefix = task.replace("super_glue_", "").replace("glue_", "")
    assert vocab.decode(batch["encoder_input_tokens"][0]).startswith(prefix)


def test_c4_span_corruption_under_mock_data():
    with tfds.testing.mock_data(num_examples=20):
        batch = _batch("c4_span_corruption", {"inputs": 32, "targets": 12}, n=2)
    assert batch["encoder_input_tokens"].shape == (2, 32)
    assert (batch["encoder_input_tokens"] != 0).all()


def test_text_to_text_format_and_postprocess():
    pre = text_to_text("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"))
    out = pre({"sentence1": "A man.", "sentence2": "A person.", "label": 0})
    assert out["inputs"] == "rte sentence1: A man. sentence2: A person." and out["targets"] == "entailment"
    # a test split's hidden label: T5's "<unk>" target, kept (for predictions), its idx with it; not scored
    hidden = pre({"sentence1": "x", "sentence2": "y", "label": -1, "idx": 7})
    assert hidden["targets"] == "<unk>" and hidden["idx"] == 7
    assert label_postprocessor(("entailment", "not_entailment"))("<unk>", is_target=True) is None
    assert text_to_text("stsb", ("sentence1", "sentence2"), None)({"sentence1": "a", "sentence2": "b",
                                                                   "label": np.float32(-1)})["targets"] == "<unk>"
    stsb = text_to_text("stsb", ("sentence1", "sentence2"), None)
    assert stsb({"sentence1": "a", "sentence2": "b", "label": 3.27})["targets"] == "3.2"
    # T5's tf.round(label * 5) / 5 on TFDS's float32 label: halves to even (0.1 * 5 is 0.5 in float32)
    for label, target in [(0.1, "0.0"), (0.7, "0.8"), (3.1, "3.2"), (4.9, "4.8"), (0.3, "0.4")]:
        assert stsb({"sentence1": "a", "sentence2": "b", "label": np.float32(label)})["targets"] == target
    # fields sorted by name, as T5's glue() writes them: MNLI's hypothesis before its premise
    mnli = text_to_text("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"))
    assert mnli({"premise": "P.", "hypothesis": "H.", "label": 1})["inputs"] == "mnli hypothesis: H. premise: P."
    post = label_postprocessor(("entailment", "not_entailment"))
    assert post("not_entailment") == 1 and post("maybe") == -1
    assert np.isnan(label_postprocessor(None)("n/a"))


def test_classification_format_for_bert():
    # T5's input text; the label as a class id, STS-B's score unrounded as a float (a regression head's target)
    rte = to_class("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"))
    assert rte({"sentence1": "A man.", "sentence2": "A person.", "label": 1, "idx": 7}) == {
        "inputs": "rte sentence1: A man. sentence2: A person.", "label": 1, "label_weight": 1.0, "idx": 7}
    # a test split's hidden label: kept for predictions, with no weight (a stand-in class id 0)
    assert rte({"sentence1": "x", "sentence2": "y", "label": -1, "idx": 3}) == {
        "inputs": "rte sentence1: x sentence2: y", "label": 0, "label_weight": 0.0, "idx": 3}
    stsb = to_class("stsb", ("sentence1", "sentence2"), None)
    out = stsb({"sentence1": "a", "sentence2": "b", "label": np.float32(3.27)})
    assert out["label"] == np.float32(3.27) and out["label"].dtype == np.float32 and out["label_weight"] == 1
    hidden = stsb({"sentence1": "a", "sentence2": "b", "label": np.float32(-1)})
    assert hidden["label"] == 0 and hidden["label"].dtype == np.float32 and hidden["label_weight"] == 0
    from t5x_lite.data.tasks import TaskRegistry

    assert TaskRegistry.get("glue_mnli_classification").num_labels == 3
    assert TaskRegistry.get("glue_stsb_classification").num_labels == 1
    assert TaskRegistry.get("glue_stsb_classification").metric_names == ("pearson", "spearman")


def test_registering_tasks_imports_no_tensorflow():
    code = ("import sys, t5x_lite.tasks as t; t.TaskRegistry.get('glue_sst2'); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "glue_cola" in TaskRegistry.names()


def test_translation_task_under_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        batch = _batch("wmt14_ende", {"inputs": 48, "targets": 48}, n=2)
    text = vocabulary().decode(batch["encoder_input_tokens"][0])
    assert text.startswith("translate English to German:")
    assert TaskRegistry.get("wmt14_ende").metric_names == ("bleu",)
