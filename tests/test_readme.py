"""The README's Python snippets run as written."""

import re
from pathlib import Path

import pytest

import t5x_lite.tasks  # noqa: F401
from t5x_lite.data.features import EncDecFeatureConverter
from t5x_lite.data.pipeline import get_dataset
from t5x_lite.data.tasks import TaskRegistry

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippet(heading: str) -> str:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_adding_a_task_snippet_registers_it():
    exec(_snippet("### Adding a task"), {})
    try:
        task = TaskRegistry.get("my_reviews")
        assert set(task.output_features) == {"inputs", "targets"}
    finally:
        TaskRegistry.remove("my_reviews")


def test_adding_an_objective_snippet_trains_through_the_pipeline():
    exec(_snippet("### Adding an objective"), {})
    try:
        ds, _ = get_dataset("bundled_corpus_span_4_20_u_u", split="validation",
                            feature_lengths={"inputs": 64, "targets": 32}, batch_size=2,
                            converter=EncDecFeatureConverter(), shard=(0, 1))
        assert next(iter(ds))["encoder_input_tokens"].shape == (2, 64)
    finally:
        TaskRegistry.remove("bundled_corpus_span_4_20_u_u")


def test_an_added_objective_is_imported_by_the_experiment_file_or_a_binding(tmp_path, monkeypatch):
    import sys

    from t5x_lite import config

    section = README.read_text().split("### Adding an objective", 1)[1]
    (tmp_path / "my_objectives.py").write_text(_snippet("### Adding an objective"))
    (tmp_path / "my_run.gin").write_text(re.search(r"```\n(import my_objectives\n.*?)```", section, re.S).group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    bindings = [f"MODEL_DIR = '{tmp_path / 'run'}'"]
    try:
        for files, extra in (([str(tmp_path / "my_run.gin")], []), ([], ["import my_objectives"])):
            sys.modules.pop("my_objectives", None)
            if "bundled_corpus_span_4_20_u_u" in TaskRegistry.names():
                TaskRegistry.remove("bundled_corpus_span_4_20_u_u")
            config.parse(files, bindings + extra, finalize=False)
            if files:
                config.check_required_macros(files, (), bindings)
            assert TaskRegistry.get("bundled_corpus_span_4_20_u_u").objective.name == "span_4_20_u_u"
    finally:
        sys.modules.pop("my_objectives", None)
        TaskRegistry.remove("bundled_corpus_span_4_20_u_u")


def test_gin_snippet_builds_the_model():
    code = _snippet("## Gin configs")
    scope: dict = {}
    exec(code, scope)
    assert scope["model"].config.d_model == 512


@pytest.mark.parametrize("heading", ["make demo", "make test"])
def test_setup_commands_are_documented(heading):
    assert heading in README.read_text()


def test_experiment_gin_snippet_parses_with_every_required_macro(tmp_path):
    import gin

    from t5x_lite import config

    text = README.read_text().split("To\nadd an experiment, write a file like this:", 1)[1]
    body = re.search(r"```\n(.*?)```", text, re.S).group(1)
    path = tmp_path / "my_run.gin"
    path.write_text(body)
    config.parse([str(path)], finalize=False)
    config.check_required_macros([str(path)])
    assert gin.query_parameter("%BATCH_SIZE") == 128
    assert gin.query_parameter("optimizers.make_optimizer.name") == "adamw_scaled"
