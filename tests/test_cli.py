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
    assert "Vocabulary size too high" in capsys.readouterr().err


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
