"""Gin at the edge: every bad file, binding or macro is one error naming the file and line, or the flag."""

import pytest

from t5x_lite import config
from t5x_lite.config import GinConfigError

QUICKSTART = "experiments/quickstart.gin"


def _error(gin_files, bindings=(), search=()):
    with pytest.raises(GinConfigError) as info:
        config.parse(gin_files, bindings, search, finalize=False)
        config.check_required_macros(gin_files, search, bindings)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _flag(key, value):
    return (f"--gin.{key}", config.flag_bindings([(key, value)])[0])


def test_a_syntax_error_names_the_full_path_of_the_included_file(tmp_path):
    # Two files share a base name: the message must say which one.
    (tmp_path / "sub").mkdir()
    (tmp_path / "inner.gin").write_text("train.seed = 1\n")
    (tmp_path / "sub" / "inner.gin").write_text("# fine\ntrain.seed = (1,\n")
    outer = tmp_path / "outer.gin"
    outer.write_text(f"include '{QUICKSTART}'\ninclude '{tmp_path / 'sub' / 'inner.gin'}'\n")
    assert _error([str(outer)]).startswith(f"{tmp_path / 'sub' / 'inner.gin'}:2: a bracket or quote")

    (tmp_path / "sub" / "inner.gin").write_text("# fine\ntrain.seed = = 1\n")
    assert _error([str(outer)]).startswith(f"{tmp_path / 'sub' / 'inner.gin'}:2: Unable to parse value")


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "latin1.gin"
    bad.write_bytes(b"train.seed = 1\n# caf\xe9\n")
    assert _error([str(bad)]) == f"{bad}: not UTF-8 text (byte 0xe9 at offset 20)"


def test_a_bad_flag_is_named_by_its_flag_not_a_line_number():
    message = _error([QUICKSTART], [_flag("TASK_FEATURE_LENGTHS", "{'inputs': 32, 'targets': 8"), _flag("SEED", "1")])
    assert message.startswith("--gin.TASK_FEATURE_LENGTHS: a bracket or quote")
    assert _error([QUICKSTART], [("--gin_bindings", "train.seed")]).startswith(
        "--gin_bindings: Couldn't parse statement")
    assert "needs quotes" in _error([QUICKSTART], [_flag("MODEL_DIR", "[tmp]/run")])
    # Errors gin finds after parsing are mapped back from its joined-bindings line number.
    message = _error([QUICKSTART], [_flag("TRAIN_STEPS", "2"), _flag("MODEL", "@models.EncoderDecoderModle()")])
    assert message.startswith("--gin.MODEL: No configurable matching") and "'models.EncoderDecoderModel'" in message


def test_a_misspelled_macro_flag_is_an_error_not_a_silent_no_op():
    message = _error([QUICKSTART], [_flag("TRAIN_STEP", "2")])
    assert message == ("--gin.TRAIN_STEP: no gin file sets or uses the macro TRAIN_STEP, so this changes nothing; "
                       "did you mean TRAIN_STEPS?")
    # Overriding a macro that a file sets is fine, and so is a macro that another flag uses.
    for bindings in ([_flag("TRAIN_STEPS", "2")], [_flag("STEPS", "2"), _flag("TRAIN_STEPS", "%STEPS")]):
        config.parse([QUICKSTART], bindings, finalize=False)
        config.check_required_macros([QUICKSTART], (), bindings)


def test_a_macro_flag_that_only_feeds_a_replaced_binding_is_an_error(tmp_path):
    # pretrain.gin says TASK = %PRETRAIN_TASK; with --gin.TASK given, the objective's PRETRAIN_TASK is read by nothing.
    message = _error([QUICKSTART], [_flag("TASK", "bundled_sentiment"), _flag("PRETRAIN_TASK", "bundled_corpus_lm")])
    assert message.startswith("--gin.PRETRAIN_TASK: nothing uses the macro PRETRAIN_TASK (set at ")
    assert message.endswith("objectives/span_3_15_u_u.gin:8, used only in bindings set again later), so this "
                            "changes nothing"), message
    # A replaced binding's macro need not be set at all, as gin never reads it.
    bare = tmp_path / "bare.gin"
    bare.write_text("include 'models/t5_1_1/tiny.gin'\ninclude 'experiments/objectives/pretrain.gin'\n")
    bindings = [_flag("TASK", "bundled_corpus_iid_15_u_u"), _flag("MODEL_DIR", str(tmp_path / "run"))]
    config.parse([str(bare)], bindings, finalize=False)
    config.check_required_macros([str(bare)], (), bindings)
    # The objective files no longer set an OBJECTIVE that nothing read.
    assert _error([QUICKSTART], [_flag("OBJECTIVE", "lm")]).startswith(
        "--gin.OBJECTIVE: no gin file sets or uses the macro OBJECTIVE")


def test_a_macro_used_but_never_set_names_where_it_is_used(tmp_path):
    typo = tmp_path / "typo.gin"
    typo.write_text(f"include '{QUICKSTART}'\nTASK = %PRETRIAN_TASK\n")
    message = _error([str(typo)])
    assert message.startswith(f"{typo}:2: macro %PRETRIAN_TASK is used but never set; did you mean %PRETRAIN_TASK")
    assert "objectives/span_3_15_u_u.gin:" in message
    assert _error([QUICKSTART], [_flag("TRAIN_STEPS", "%TRAIN_STEP")]).startswith(
        "--gin.TRAIN_STEPS: macro %TRAIN_STEP is used but never set")


def test_a_missing_required_macro_points_at_a_misspelled_one(tmp_path):
    typo = tmp_path / "typo.gin"
    typo.write_text("include 'models/t5_1_1/tiny.gin'\ninclude 'objectives/span_3_15_u_u.gin'\n"
                    "include 'runs/pretrain.gin'\nTASK = %PRETRAIN_TASK\nMODLE_DIR = '/tmp/x'\n"
                    "TASK_FEATURE_LENGTHS = {'inputs': 32, 'targets': 8}\nTRAIN_STEPS = 2\nBATCH_SIZE = 4\n")
    message = _error([str(typo)])
    assert message.startswith("missing REQUIRED macro: MODEL_DIR (required by ")
    assert f"MODLE_DIR is set at {typo}:5 but never used: a misspelling?" in message


def test_a_missing_gin_file_suggests_the_close_one():
    with pytest.raises(FileNotFoundError, match=r"did you mean experiments/quickstart.gin\?$"):
        config.resolve_gin_file("experiments/quickstrat.gin")
    with pytest.raises(FileNotFoundError, match=r"did you mean .*gin_configs/experiments/quickstart.gin\?$"):
        config.resolve_gin_file("experiments/quickstart")
    with pytest.raises(FileNotFoundError, match=r"\(searched [^)]*\)$"):  # nothing close: no guess
        config.resolve_gin_file("something/else.gin")
    for name in ("quickstart.gin", "quickstart"):  # given without its folder
        with pytest.raises(FileNotFoundError, match=r"did you mean experiments/quickstart.gin\?$"):
            config.resolve_gin_file(name)


def test_a_gin_import_of_a_module_not_on_the_path_names_the_line_and_the_fix(tmp_path, monkeypatch):
    bad = tmp_path / "mine.gin"
    bad.write_text(f"include '{QUICKSTART}'\nimport my_tasks_nowhere\n")
    assert _error([str(bad)]) == (f"{bad}:2: No module named 'my_tasks_nowhere' (gin imports modules as Python "
                                  "does: run from the directory that holds it, or add that directory to PYTHONPATH)")
    # found, but it imports what is not installed: no path hint, the missing module named
    (tmp_path / "my_tasks_here.py").write_text("import nonexistent_dependency_xyz\n")
    bad.write_text(f"include '{QUICKSTART}'\nimport my_tasks_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _error([str(bad)]) == f"{bad}:2: No module named 'nonexistent_dependency_xyz'"
    bad.write_text(f"include '{QUICKSTART}'\nimport t5x_lite.no_such_submodule\n")  # a misspelling, not the path
    assert _error([str(bad)]) == f"{bad}:2: No module named 't5x_lite.no_such_submodule'"


def test_a_dict_flag_with_unquoted_keys_gets_the_dict_hint():
    message = _error([QUICKSTART], [_flag("TASK_FEATURE_LENGTHS", "{inputs: 32, targets: 8}")])
    assert message.startswith("--gin.TASK_FEATURE_LENGTHS: not a value gin can read (a dict's string keys and "
                              "values need quotes"), message


def test_a_dict_over_several_lines_of_a_file_gets_the_dict_hint(tmp_path):
    bad = tmp_path / "lengths.gin"
    bad.write_text(f"include '{QUICKSTART}'\nTASK_FEATURE_LENGTHS = {{\n    inputs: 32,\n    targets: 8}}\n")
    message = _error([str(bad)])
    assert message.startswith(f"{bad}:") and "a dict's string keys and values need quotes" in message, message


def test_every_shipped_experiment_passes_the_macro_checks():
    # No false alarms: each experiment sets every macro it uses (given what its header leaves to the user).
    user = {"MODEL_DIR": "'/tmp/run'", "INITIAL_CHECKPOINT": "'/tmp/ckpt'", "HF_TOKENIZER": "'/tmp/hf'"}
    for path in sorted(config.GIN_CONFIGS.glob("experiments/**/*.gin")):
        required = config.required_macros([str(path)])
        if not any("MODEL" in source.macros_set for source in config.scan_sources([str(path)])):
            continue  # a recipe that other experiments include after choosing a model
        bindings = [(f"--gin.{k}", f"{k} = {v}") for k, v in user.items() if k in required]
        config.parse([str(path)], bindings, finalize=False)
        config.check_required_macros([str(path)], (), bindings)


def test_liveness_follows_gin_order_for_includes_placed_anywhere_and_included_twice(tmp_path):
    # gin applies an include where it stands, and again each time a file is included.
    recipe = tmp_path / "recipe.gin"
    recipe.write_text("LR = 0.1\noptimizers.make_optimizer.learning_rate = %LR\n")
    late = tmp_path / "late.gin"  # its own learning_rate comes first, the recipe's (reading LR) replaces it
    late.write_text(f"include '{QUICKSTART}'\noptimizers.make_optimizer.learning_rate = 0.5\ninclude '{recipe}'\n")
    twice = tmp_path / "twice.gin"  # replaced in between, then re-applied by the second include
    twice.write_text(f"include '{QUICKSTART}'\ninclude '{recipe}'\noptimizers.make_optimizer.learning_rate = 0.5\n"
                     f"include '{recipe}'\n")
    for path in (late, twice):
        config.parse([str(path)], [_flag("LR", "0.2")], finalize=False)
        config.check_required_macros([str(path)], (), [_flag("LR", "0.2")])
    # gin applies the --gin_file list as given, a file given again (or one an earlier file included) included
    plain = str(first_binding(tmp_path))
    for files in ([str(late), plain, str(recipe)], [str(recipe), plain, str(recipe)]):
        config.parse(files, [_flag("LR", "0.2")], finalize=False)
        config.check_required_macros(files, (), [_flag("LR", "0.2")])
    first = tmp_path / "first.gin"  # the include comes first, so the file's own binding wins: LR is read by nothing
    first.write_text(f"include '{QUICKSTART}'\ninclude '{recipe}'\noptimizers.make_optimizer.learning_rate = 0.5\n")
    assert _error([str(first)], [_flag("LR", "0.2")]) == (
        f"--gin.LR: nothing uses the macro LR (set at {recipe}:1, used only in bindings set again later), "
        "so this changes nothing")


def first_binding(tmp_path):
    plain = tmp_path / "plain.gin"
    plain.write_text(f"include '{QUICKSTART}'\noptimizers.make_optimizer.learning_rate = 0.5\n")
    return plain


def test_an_include_cycle_is_named_not_a_recursion_error(tmp_path):
    (tmp_path / "a.gin").write_text(f"include '{QUICKSTART}'\ninclude '{tmp_path / 'b.gin'}'\n")
    (tmp_path / "b.gin").write_text(f"TRAIN_STEPS = 3\ninclude '{tmp_path / 'a.gin'}'\n")
    assert _error([str(tmp_path / "a.gin")]) == (f"{tmp_path / 'b.gin'}:2: include '{tmp_path / 'a.gin'}' is a cycle "
                                                 f"({tmp_path / 'a.gin'} -> {tmp_path / 'b.gin'} -> "
                                                 f"{tmp_path / 'a.gin'})")


def test_scoped_macros_and_includes_in_bindings_are_followed_like_gin(tmp_path):
    macros = tmp_path / "macros.gin"
    macros.write_text("MY_SEED = 3\n")
    uses = tmp_path / "uses.gin"
    uses.write_text(f"include '{QUICKSTART}'\nfoo/LR = 0.1\noptimizers.make_optimizer.learning_rate = %foo/LR\n"
                    "train.seed = %MY_SEED\n")
    bindings = [("--gin_bindings", f"include '{macros}'")]
    config.parse([str(uses)], bindings, finalize=False)
    config.check_required_macros([str(uses)], (), bindings)
