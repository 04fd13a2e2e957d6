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
    assert "vocab_size 400" in capsys.readouterr().out
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


def test_console_script_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "t5x_lite.cli", "--help"], capture_output=True, text=True, check=True)
    assert "convert" in out.stdout and "vocab" in out.stdout
