"""The GLUE and SuperGLUE leaderboards' submission files: each task's format, and `t5x_lite submit` end to end
under TFDS mock data, for a T5 checkpoint and for BERT classifiers fine-tuned task by task."""

import dataclasses
import json
import re
import zipfile

import jax
import numpy as np
import pytest

from t5x_lite import cli
from t5x_lite.errors import ConfigError
from t5x_lite.data.sources import DataError
from t5x_lite.evaluation import submission
from t5x_lite.evaluation.submission import BENCHMARKS, leaderboard_files, submit_checkpoint, write_file
from t5x_lite.tasks.tfds_tasks import label_names
from t5x_lite.models.config import BertConfig, T5Config
from t5x_lite.models.model import EncoderDecoderModel, EncoderOnlyClassificationModel
from t5x_lite.training import checkpoints
from tests.tfds_records import as_tfds

TINY_T5 = T5Config(vocab_size=8000, d_model=32, d_ff=48, num_heads=2, d_kv=16, num_encoder_layers=1,
                   num_decoder_layers=1, mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                   dropout_rate=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=16)
TINY_BERT = BertConfig(vocab_size=8000, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                       max_position_embeddings=64)


def _file(benchmark, name):
    return next(f for f in BENCHMARKS[benchmark] if f.name == name)


def _rows(predictions, idxs, targets="<unk>"):
    return [{"inputs": "", "targets": targets, "prediction": p, "score": 0.0, "example": {"idx": i}}
            for p, i in zip(predictions, idxs)]


def _lines(path):
    return open(path).read().splitlines()


def test_glue_files_are_tsvs_of_index_and_prediction_in_idx_order(tmp_path):
    # T5's predicted text through the task's postprocessor; a text that names no label still gets a line
    cola = write_file(_file("glue", "CoLA.tsv"), _rows(["acceptable", "unacceptable", "maybe"], [2, 0, 1]), tmp_path)
    assert _lines(cola["path"]) == ["index\tprediction", "0\t0", "1\t0", "2\t1"] and cola["unreadable"] == 1
    mnli = write_file(_file("glue", "MNLI-mm.tsv"), _rows(["neutral", "contradiction"], [0, 1]), tmp_path)
    assert _lines(mnli["path"]) == ["index\tprediction", "0\tneutral", "1\tcontradiction"]
    stsb = write_file(_file("glue", "STS-B.tsv"), _rows(["3.4", "5.8", "-0.2", "n/a"], [0, 1, 2, 3]), tmp_path)
    assert _lines(stsb["path"])[1:] == ["0\t3.400", "1\t5.000", "2\t0.000", "3\t0.000"] and stsb["unreadable"] == 1
    # a BERT classifier's rows hold the class id (or the regression head's score) already
    rte = write_file(_file("glue", "RTE.tsv"), _rows([1, 0], [0, 1], targets=None), tmp_path)
    assert _lines(rte["path"])[1:] == ["0\tnot_entailment", "1\tentailment"]
    qqp = write_file(_file("glue", "QQP.tsv"), _rows([1, 0], [0, 1], targets=None), tmp_path)
    assert _lines(qqp["path"])[1:] == ["0\t1", "1\t0"]
    stsb = write_file(_file("glue", "STS-B.tsv"), _rows([2.25, 7.0], [0, 1], targets=None), tmp_path)
    assert _lines(stsb["path"])[1:] == ["0\t2.250", "1\t5.000"]
    # NumPy's numbers read as Python's
    rte = write_file(_file("glue", "RTE.tsv"), _rows([np.int64(1)], [0], targets=None), tmp_path)
    stsb = write_file(_file("glue", "STS-B.tsv"), _rows([np.float32(1.5)], [0], targets=None), tmp_path)
    assert _lines(rte["path"])[1:] == ["0\tnot_entailment"] and _lines(stsb["path"])[1:] == ["0\t1.500"]
    assert rte["unreadable"] == stsb["unreadable"] == 0
    with pytest.raises(ConfigError, match=r"WNLI.tsv: two predictions of 'glue_wnli' split 'test' have idx 4"):
        write_file(_file("glue", "WNLI.tsv"), _rows(["entailment", "entailment"], [4, 4]), tmp_path)
    with pytest.raises(ConfigError, match=r"SST-2.tsv: a prediction of 'glue_sst2' has no idx"):
        write_file(_file("glue", "SST-2.tsv"), [{"prediction": "positive", "targets": "<unk>"}], tmp_path)


def test_wnli_read_as_wsc_writes_entailment_where_the_candidate_is_the_referent(tmp_path):
    wnli = leaderboard_files("glue", ["glue_wnli_simple"], wnli_task="glue_wnli_simple")
    assert [(f.name, f.task) for f in wnli] == [("WNLI.tsv", "glue_wnli_simple")]
    rows = [{"targets": "The worm", "prediction": "the worm", "example": {"label": -1, "idx": 0}},
            {"targets": "Mark", "prediction": "Pete", "example": {"label": -1, "idx": 1}}]
    assert _lines(write_file(wnli[0], rows, tmp_path)["path"]) == ["index\tprediction", "0\t1", "1\t0"]
    with pytest.raises(ConfigError, match="wnli_task must be one of glue_wnli, glue_wnli_simple, got 'wsc'"):
        leaderboard_files("glue", wnli_task="wsc")


def test_super_glue_files_are_jsonl_in_each_tasks_format(tmp_path):
    def records(path):
        return [json.loads(line) for line in _lines(path)]

    boolq = write_file(_file("super_glue", "BoolQ.jsonl"), _rows(["True", "False"], [1, 0]), tmp_path)
    assert records(boolq["path"]) == [{"idx": 0, "label": "false"}, {"idx": 1, "label": "true"}]
    cb = write_file(_file("super_glue", "CB.jsonl"), _rows(["neutral", "contradiction"], [0, 1]), tmp_path)
    assert records(cb["path"]) == [{"idx": 0, "label": "neutral"}, {"idx": 1, "label": "contradiction"}]
    copa = write_file(_file("super_glue", "COPA.jsonl"), _rows(["choice2", "choice1"], [0, 1]), tmp_path)
    assert records(copa["path"]) == [{"idx": 0, "label": 1}, {"idx": 1, "label": 0}]
    axb = write_file(_file("super_glue", "AX-b.jsonl"), _rows([0], [0], targets=None), tmp_path)  # BERT's class id
    assert records(axb["path"]) == [{"idx": 0, "label": "entailment"}]
    # WSC: whether the predicted noun is the candidate (T5's wsc_simple match), the candidate being the target
    wsc_rows = [{"targets": "the fuzzy bunny", "prediction": "bunny", "example": {"label": -1, "idx": 1}},
                {"targets": "Bob", "prediction": "the dog", "example": {"label": -1, "idx": 0}}]
    wsc = write_file(_file("super_glue", "WSC.jsonl"), wsc_rows, tmp_path)
    assert records(wsc["path"]) == [{"idx": 0, "label": "False"}, {"idx": 1, "label": "True"}]
    # ReCoRD: the entity's text, keyed by the query's idx
    record_rows = [{"targets": "<unk>", "prediction": "Paris", "example": {"idx": {"passage": 3, "query": 9},
                                                                            "answers": []}},
                   {"targets": "<unk>", "prediction": "Bob Smith", "example": {"idx": {"passage": 3, "query": 8},
                                                                                "answers": []}}]
    record = write_file(_file("super_glue", "ReCoRD.jsonl"), record_rows, tmp_path)
    assert records(record["path"]) == [{"idx": 8, "label": "Bob Smith"}, {"idx": 9, "label": "Paris"}]
    # MultiRC: one line per paragraph, questions and answers nested in idx order
    options = [(1, 5, 11, "True"), (0, 2, 4, "False"), (1, 5, 10, "False"), (1, 3, 7, "True"), (0, 2, 3, "True")]
    multirc_rows = [{"targets": "<unk>", "prediction": p, "example": {
        "idx": {"paragraph": par, "question": q, "answer": a}, "group": [par, q]}} for par, q, a, p in options]
    multirc = write_file(_file("super_glue", "MultiRC.jsonl"), multirc_rows, tmp_path)
    assert records(multirc["path"]) == [
        {"idx": 0, "passage": {"questions": [{"idx": 2, "answers": [{"idx": 3, "label": 1}, {"idx": 4, "label": 0}]}]}},
        {"idx": 1, "passage": {"questions": [
            {"idx": 3, "answers": [{"idx": 7, "label": 1}]},
            {"idx": 5, "answers": [{"idx": 10, "label": 0}, {"idx": 11, "label": 1}]}]}}]
    with pytest.raises(ConfigError, match="paragraph 0 question 2 answer 3"):
        write_file(_file("super_glue", "MultiRC.jsonl"), multirc_rows + multirc_rows[-1:], tmp_path)


def test_t5x_lite_submit_writes_glues_zip_under_mock_data(tmp_path, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    model = EncoderDecoderModel(config=TINY_T5)
    ckpt = checkpoints.save_params(tmp_path / "ckpt", model.init(jax.random.key(0), model.dummy_batch(1, {
        "inputs": 8, "targets": 4})), model)
    flags = ["submit", "--gin_file=runs/submit.gin", f"--gin.CHECKPOINT={ckpt}", "--gin.BENCHMARK=glue",
             "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 4}", "--gin.submit_checkpoint.max_examples=5",
             "--gin.submit_checkpoint.batch_size=4", "--gin.evaluation.DecodeOptions.max_decode_length=4"]
    with tfds.testing.mock_data(num_examples=5):
        assert cli.main(flags) == 0
        assert f"wrote {ckpt}/submission/glue.zip: CoLA.tsv, SST-2.tsv" in capsys.readouterr().out
        names = [f.name for f in BENCHMARKS["glue"]]
        with zipfile.ZipFile(ckpt / "submission" / "glue.zip") as z:
            assert z.namelist() == names
            for name in names:
                lines = z.read(name).decode().splitlines()
                assert lines[0] == "index\tprediction" and len(lines) == 6
        for f in BENCHMARKS["glue"]:  # every value is one the server reads for that file
            values = [line.split("\t")[1] for line in _lines(ckpt / "submission" / "glue" / f.name)[1:]]
            if f.form == "score":
                assert all(0 <= float(v) <= 5 for v in values), (f.name, values)
            else:
                allowed = label_names(f.task) if f.form == "name" else ("0", "1")
                assert set(values) <= set(allowed), (f.name, values)
        # a second submission is numbered beside the first, not written over it
        assert cli.main(flags + ["--gin.submit_checkpoint.tasks=['glue_rte']"]) == 0
    out = capsys.readouterr().out  # an untrained model's predictions name no label: said, and written anyway
    assert re.search(r"glue-2.zip: RTE.tsv; \d+ predictions named no label \(written as the first one\); the "
                     r"leaderboard also expects CoLA.tsv, SST-2.tsv", out)
    assert zipfile.ZipFile(ckpt / "submission" / "glue-2.zip").namelist() == ["RTE.tsv"]


def test_bert_classifiers_fine_tuned_per_task_submit_their_classes(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    ckpts = {}
    for task, num_labels in (("glue_rte", 2), ("glue_stsb", 1)):
        model = EncoderOnlyClassificationModel(config=dataclasses.replace(TINY_BERT, num_labels=num_labels))
        params = model.init(jax.random.key(0), model.dummy_batch(1, {"inputs": 32}))
        ckpts[task] = str(checkpoints.save_params(tmp_path / task, params, model))
    kw = dict(checkpoint=ckpts, benchmark="glue", feature_lengths={"inputs": 32}, batch_size=4, max_examples=4,
              tasks=["glue_rte", "glue_stsb"], output_dir=str(tmp_path / "out"))
    with tfds.testing.mock_data(num_examples=4):
        result = submit_checkpoint(**kw)
    assert list(result["files"]) == ["STS-B.tsv", "RTE.tsv"] and "CoLA.tsv" in result["missing"]
    rte = _lines(tmp_path / "out" / "glue" / "RTE.tsv")
    assert len(rte) == 5 and {line.split("\t")[1] for line in rte[1:]} <= {"entailment", "not_entailment"}

    scores = [float(line.split("\t")[1]) for line in _lines(tmp_path / "out" / "glue" / "STS-B.tsv")[1:]]
    assert len(scores) == 4 and all(0 <= s <= 5 for s in scores)
    # errors name what is wrong before any params load
    with pytest.raises(ConfigError, match=r"no checkpoint for glue_cola"):
        submit_checkpoint(**dict(kw, tasks=["glue_rte", "glue_cola"]))
    with pytest.raises(ConfigError, match=r"with a checkpoint per task, give output_dir"):
        submit_checkpoint(**dict(kw, output_dir=None))
    with pytest.raises(ConfigError, match=r"holds a BERT classifier, and 'glue_wnli_simple' \(WNLI.tsv\) has no "
                                          r"_classification variant"):
        submit_checkpoint(**dict(kw, tasks=["glue_wnli_simple"], wnli_task="glue_wnli_simple",
                                 checkpoint={"glue_wnli_simple": ckpts["glue_rte"]}))
    # MultiRC's answer options, classified, nest by paragraph and question as T5's predictions do
    with tfds.testing.mock_data(num_examples=4):
        result = submit_checkpoint(**dict(kw, benchmark="super_glue", tasks=["super_glue_multirc"],
                                          checkpoint={"super_glue_multirc": ckpts["glue_rte"]}))
    lines = [json.loads(line) for line in _lines(result["files"]["MultiRC.jsonl"]["path"])]
    answers = [a for p in lines for q in p["passage"]["questions"] for a in q["answers"]]
    assert len(answers) == 4 and {a["label"] for a in answers} <= {0, 1}


def _record_and_wsc_test_source(builder, split, **kwargs):  # stands in for super_glue/record and wsc.fixed
    if builder.builder_config.name == "record":
        records = [{"passage": "Bob met Ann.", "query": f"@placeholder met her {q}.", "entities": ["Bob", "Ann"],
                    "answers": [], "idx": {"passage": 0, "query": q}} for q in (1, 0)]
    else:
        records = [{"text": "Tom asked Bob if he could go.", "span1_text": name, "span1_index": 0, "span2_text": "he",
                    "span2_index": 4, "label": -1, "idx": i} for i, name in enumerate(["Tom", "Bob"])]
    return [as_tfds(r) for r in records]


def test_a_bert_classifier_submits_record_and_wsc(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    model = EncoderOnlyClassificationModel(config=TINY_BERT)
    ckpt = str(checkpoints.save_params(tmp_path / "bert", model.init(jax.random.key(0), model.dummy_batch(
        1, {"inputs": 32})), model))
    with tfds.testing.mock_data(as_data_source_fn=_record_and_wsc_test_source):
        result = submit_checkpoint(checkpoint={"super_glue_record": ckpt, "super_glue_wsc": ckpt},
                                   benchmark="super_glue", tasks=["super_glue_record", "super_glue_wsc"],
                                   feature_lengths={"inputs": 32}, batch_size=4, output_dir=str(tmp_path / "out"))
    record = [json.loads(line) for line in _lines(result["files"]["ReCoRD.jsonl"]["path"])]
    # one line per query (not per candidate), in idx order, naming one of its candidates
    assert [r["idx"] for r in record] == [0, 1] and {r["label"] for r in record} <= {"Bob", "Ann"}
    wsc = [json.loads(line) for line in _lines(result["files"]["WSC.jsonl"]["path"])]
    assert [r["idx"] for r in wsc] == [0, 1] and {r["label"] for r in wsc} <= {"True", "False"}
    assert result["files"]["ReCoRD.jsonl"]["unreadable"] == 0 and result["files"]["WSC.jsonl"]["unreadable"] == 0


def test_unknown_benchmarks_and_tasks_are_named():
    with pytest.raises(ConfigError, match=r"benchmark 'glu' has no leaderboard files here; it is one of glue, "
                                          r"super_glue"):
        leaderboard_files("glu")
    with pytest.raises(ConfigError, match=r"glue has no leaderboard file for 'glue_boolq'; its tasks are glue_ax, "):
        leaderboard_files("glue", ["glue_boolq"])
    assert [f.split for f in leaderboard_files("glue", ["glue_mnli"])] == ["test_matched", "test_mismatched"]


RTE_TEST = [{"sentence1": f"A man plays guitar number {i}.", "sentence2": "A person plays music.", "label": -1,
             "idx": 3 - i} for i in range(4)]  # a test split: hidden labels, idx not in reading order


def _rte_test_source(builder, split, **kwargs):  # stands in for tfds.data_source("glue/rte")
    return [as_tfds(r) for r in RTE_TEST]


def test_hidden_labels_are_submitted_and_a_short_file_is_refused(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    ckpts = {}
    for name, model in (("t5", EncoderDecoderModel(config=TINY_T5)),
                        ("bert", EncoderOnlyClassificationModel(config=TINY_BERT))):
        params = model.init(jax.random.key(0), model.dummy_batch(1, {"inputs": 8, "targets": 4}))
        ckpts[name] = str(checkpoints.save_params(tmp_path / name, params, model))
    kw = dict(benchmark="glue", tasks=["glue_rte"], feature_lengths={"inputs": 32, "targets": 4}, batch_size=4)
    with tfds.testing.mock_data(as_data_source_fn=_rte_test_source):
        for name in ckpts:  # T5's text and a BERT classifier's class ids, every test row with its idx
            result = submit_checkpoint(checkpoint=ckpts[name], **kw)
            lines = _lines(result["files"]["RTE.tsv"]["path"])
            assert [line.split("\t")[0] for line in lines] == ["index", "0", "1", "2", "3"], (name, lines)
            assert {line.split("\t")[1] for line in lines[1:]} <= {"entailment", "not_entailment"}
        # a record dropped by a preprocessor (or skipped as bad) would leave a line out: refused, leaving the
        # earlier submission as it was and no empty zip, also when told to overwrite it
        real_predict = submission.predict

        def dropping_one(**k):
            rows = real_predict(**k)
            k["counts"]["dropped_examples"] = {k["task"]: 1}
            return rows[1:]

        monkeypatch.setattr(submission, "predict", dropping_one)
        before = (tmp_path / "t5" / "submission" / "glue.zip").read_bytes()
        for overwrite in (False, True):
            with pytest.raises(DataError, match=r"RTE.tsv: task 'glue_rte' split 'test' has records 1 dropped by its "
                                                r"preprocessors"):
                submit_checkpoint(checkpoint=ckpts["t5"], overwrite=overwrite, **kw)
    submitted = tmp_path / "t5" / "submission"
    assert sorted(p.name for p in submitted.iterdir()) == ["glue", "glue.zip"]
    assert (submitted / "glue.zip").read_bytes() == before and len(_lines(submitted / "glue" / "RTE.tsv")) == 5
