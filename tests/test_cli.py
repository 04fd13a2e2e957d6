"""The command line: subcommands run, user errors print one line and exit 2."""

import subprocess
import sys

import numpy as np

from t5x_lite import cli
from t5x_lite.data.vocab import SentencePieceVocabulary


def test_vocab_trains_a_t5_layout_model(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(2000)]
    words[:3] = ["alpha", "beta", "gamma"]
    corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(3000)) + "\nalpha beta gamma\n")
    assert cli.main(["vocab", "--input", str(corpus), "--vocab_size", "400", "--out", str(tmp_path / "sp"),
                     "--no_byte_fallback"]) == 0
    out = capsys.readouterr().out
    assert "vocab_size 400" in out and f"trained {tmp_path / 'sp.model'} and {tmp_path / 'sp.vocab'}:" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "sp.model", "sp.vocab"]  # no temp files
    vocab = SentencePieceVocabulary(str(tmp_path / "sp.model"))
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id, vocab.vocab_size) == (0, 1, 2, 400)
    assert vocab.decode(vocab.encode("alpha beta gamma")) == "alpha beta gamma"


def test_vocab_too_small_corpus_is_one_line_error(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("a b c\n" * 10)
    assert cli.main(["vocab", "--input", str(tmp_path / "c.txt"), "--vocab_size", "400", "--out",
                     str(tmp_path / "sp"), "--no_byte_fallback"]) == 2
    err = capsys.readouterr().err
    # SentencePiece counts pieces (vocab_size - extra_ids): the message must be in --vocab_size terms.
    assert err.startswith("t5x_lite vocab: error: vocab_size 400 is too large for text lines from ")
    assert "c.txt: it yields at most vocab_size 1" in err and "+ 100 extra ids" in err and err.count("\n") == 1
    most = int(err.split("at most vocab_size ")[1].split()[0])
    assert cli.main(["vocab", "--input", str(tmp_path / "c.txt"), "--vocab_size", str(most), "--out",
                     str(tmp_path / "sp"), "--no_byte_fallback"]) == 0


def test_vocab_too_few_pieces_for_the_characters_names_existing_flags(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"{chr(0x61 + i % 26)}{chr(0x3b1 + i % 24)} x\n" for i in range(500)), encoding="utf-8")
    args = ["vocab", "--input", str(corpus), "--vocab_size", "120", "--no_byte_fallback"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t5x_lite vocab: error: vocab_size 120 is too small for the characters in ")
    assert "--character_coverage option" not in err and "lower character_coverage (now 0.9999" in err
    least = int(err.split("at least vocab_size ")[1].split()[0])
    assert least > 150  # 26 Latin + 24 Greek letters + space + pad/eos/unk, + 100 sentinels
    assert cli.main(["vocab", "--input", str(corpus), "--vocab_size", str(least), "--no_byte_fallback",
                     "--out", str(tmp_path / "b")]) == 0
    assert cli.main([*args, "--character_coverage", "0.5", "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "t5x_lite vocab: error: --character_coverage must be in [0.98, 1] (SentencePiece's range), got 0.5")


def test_vocab_character_coverage_flag_reaches_sentencepiece(tmp_path, monkeypatch):
    import pytest
    import sentencepiece as spm

    seen = {}

    class Stop(Exception):
        pass

    def record(**kwargs):
        seen.update(kwargs, sentence_iterator=None)
        raise Stop

    monkeypatch.setattr(spm.SentencePieceTrainer, "train", record)
    (tmp_path / "c.txt").write_text("a b c\n")
    with pytest.raises(Stop):
        cli.main(["vocab", "--input", str(tmp_path / "c.txt"), "--vocab_size", "400", "--out", str(tmp_path / "v"),
                  "--character_coverage", "0.985"])
    assert seen["character_coverage"] == 0.985


def test_vocab_long_documents_train(tmp_path, capsys):
    # Every line is over SentencePiece's 16384-byte max_sentence_length; it used to skip them all and fail.
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(3000)]
    (tmp_path / "long.txt").write_text("\n".join(" ".join(rng.choice(words, 4500)) for _ in range(12)) + "\n")
    assert cli.main(["vocab", "--input", str(tmp_path / "long.txt"), "--vocab_size", "600",
                     "--out", str(tmp_path / "L1")]) == 0
    captured = capsys.readouterr()
    assert "vocab_size 600" in captured.out
    assert SentencePieceVocabulary(str(tmp_path / "L1.model")).vocab_size == 600


def test_vocab_bad_glob_is_one_line_error(tmp_path, capsys):
    assert cli.main(["vocab", "--input", str(tmp_path / "nothing*.txt"), "--vocab_size", "400",
                     "--out", str(tmp_path / "sp")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("t5x_lite vocab: error:") and "matches no files" in err and "\n" not in err


def _vocab(tmp_path, *flags):
    (tmp_path / "c.txt").write_text("a b c\n" * 10)
    return cli.main(["vocab", "--input", str(tmp_path / "c.txt"), "--vocab_size", "400", *flags])


def test_vocab_never_overwrites_a_vocabulary(tmp_path, capsys):
    (tmp_path / "v.model").write_bytes(b"kept model")
    (tmp_path / "v.vocab").write_text("kept vocab")
    for flags in ([], ["--extra_ids", "-1"], ["--max_sentences", "-2"]):
        assert _vocab(tmp_path, "--out", str(tmp_path / "v"), *flags) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"t5x_lite vocab: error: {tmp_path / 'v.model'} and {tmp_path / 'v.vocab'}: already exist; "
                      "refusing to overwrite a vocabulary (give another prefix)")
    assert err[1:] == ["t5x_lite vocab: error: --extra_ids must be >= 0, got -1",
                       "t5x_lite vocab: error: --max_sentences must be >= 0, got -2"]
    assert (tmp_path / "v.model").read_bytes() == b"kept model" and (tmp_path / "v.vocab").read_text() == "kept vocab"
    (tmp_path / "v.vocab").unlink()
    assert _vocab(tmp_path, "--out", str(tmp_path / "v")) == 2
    assert f"{tmp_path / 'v.model'}: already exists" in capsys.readouterr().err


def test_vocab_out_must_be_a_file_prefix(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    for out in ("", str(tmp_path / "d") + "/", str(tmp_path / "d"), str(tmp_path / "..")):
        assert _vocab(tmp_path, "--out", out) == 2
        assert f"out_prefix {out!r} must be a file prefix" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "d"] and not any((tmp_path / "d").iterdir())


def test_console_script_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "t5x_lite.cli", "--help"], capture_output=True, text=True, check=True)
    assert "convert" in out.stdout and "vocab" in out.stdout


def test_a_type_error_is_one_line_only_when_a_setting_caused_it(tmp_path, capsys, monkeypatch):
    import gin
    import pytest

    def probe(*, size):
        if size == "bug":
            return len(5)  # a TypeError inside the code: a bug
        return size

    configured = gin.external_configurable(probe, name="cli_type_error_probe")
    try:
        with pytest.raises(TypeError) as missing:
            configured()  # gin calls it without the argument its signature needs: the setting's fault
        assert cli._is_a_call_the_config_made(missing.value)
        with pytest.raises(TypeError) as bug:
            configured(size="bug")
        assert not cli._is_a_call_the_config_made(bug.value)
    finally:
        gin.clear_config()

    def broken_vocab(args):
        return len(5)

    monkeypatch.setattr(cli, "_vocab", broken_vocab)
    with pytest.raises(TypeError, match="has no len"):  # the traceback survives
        cli.main(["vocab", "--input", str(tmp_path / "x.txt"), "--vocab_size", "400", "--out", str(tmp_path / "v")])


# --------------------------------------------------------------------------- train: multi-host settings


MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "T5X_LITE_DISTRIBUTED",
                 "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                 "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")


def test_bad_multihost_settings_are_one_line_errors(monkeypatch, capsys):
    import jax
    import pytest

    def must_not_start(**kwargs):
        raise AssertionError(f"jax.distributed.initialize called with {kwargs}")

    monkeypatch.setattr(jax.distributed, "initialize", must_not_start)
    slurm = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="n[1-2]", SLURM_NTASKS="2x", SLURM_PROCID="0",
                 SLURM_LOCALID="0")
    cases = [
        (dict(JAX_NUM_PROCESSES="abc"), [], ["JAX_NUM_PROCESSES='abc' is not an integer", "--num_processes"]),
        (dict(JAX_NUM_PROCESSES="2"), [], ["JAX_NUM_PROCESSES=2 but no coordinator_address",
                                           "--coordinator_address or JAX_COORDINATOR_ADDRESS",
                                           "--process_id or JAX_PROCESS_ID"]),
        ({}, ["--num_processes", "0"], ["--num_processes 0:", "must be >= 1", "JAX_NUM_PROCESSES"]),
        (dict(T5X_LITE_DISTRIBUTED="yes"), [], ["T5X_LITE_DISTRIBUTED='yes': use 'auto', 'off'"]),
        (slurm, [], ["SLURM_NTASKS='2x' is not an integer"]),
        ({}, ["--num_processes", "2", "--process_id", "5", "--coordinator_address", "10.0.0.1:1234"],
         ["--process_id 5 is out of range for --num_processes 2", "0 to 1"]),
        (dict(JAX_NUM_PROCESSES="2"), ["--process_id", "-1"], ["--process_id -1:", "JAX_PROCESS_ID", ">= 0"]),
        (dict(T5X_LITE_DISTRIBUTED="off"), ["--num_processes", "2", "--coordinator_address", "h:1"],
         ["T5X_LITE_DISTRIBUTED=off", "--coordinator_address h:1, --num_processes 2 were given"]),
    ]
    for env, flags, expected in cases:
        for var in MULTIHOST_ENV:
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        assert cli.main(["train", "--gin_file", "experiments/quickstart.gin", *flags]) == 2, (env, flags)
        err = capsys.readouterr().err
        assert err.startswith("t5x_lite train: error: ") and err.count("\n") == 1, err
        for text in expected:
            assert text in err, (text, err)
    with pytest.raises(SystemExit):  # argparse's own one-line error for a non-integer flag
        cli.main(["train", "--num_processes", "two"])
