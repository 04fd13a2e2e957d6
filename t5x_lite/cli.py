"""``t5x_lite`` command line: ``train``, ``eval``, ``infer``, ``submit``, ``convert`` and ``vocab``.

Errors that a user can fix (a missing file, a bad key) print one line naming the
file or key and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Optional, Sequence


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def _convert(args: argparse.Namespace) -> None:
    from t5x_lite import convert
    from t5x_lite.training import checkpoints

    if bool(args.from_hf) == bool(args.from_checkpoint):
        raise UserError("convert: give exactly one of --from_hf DIR (import) or --from CKPT_DIR (export)")
    if args.from_hf:
        if args.to_hf:
            raise UserError("convert --from_hf writes a t5x_lite checkpoint: give --to CKPT_DIR, not --to_hf")
        if not args.to:
            raise UserError("convert --from_hf needs --to CKPT_DIR")
        if os.path.realpath(args.to) == os.path.realpath(args.from_hf):
            raise UserError(f"convert: --to {args.to} is the Hugging Face directory itself; give another directory "
                            "(a checkpoint written among the HF files would be mistaken for them and they for it)")
        checkpoints.check_new_params_directory(args.to)  # before the import, which can take minutes
        model, params = convert.import_hf(args.from_hf)
        out = checkpoints.save_params(args.to, params, model)
        print(f"imported {args.from_hf} ({model.kind}, {_count(params):,} parameters) -> {out}")
        print(f"model gin config: {out / checkpoints.MODEL_GIN}")
    else:
        if args.to:
            raise UserError("convert --from writes a Hugging Face directory: give --to_hf DIR, not --to")
        if not args.to_hf:
            raise UserError("convert --from needs --to_hf DIR")
        convert.check_export_directory(args.to_hf)  # before loading the params
        model, params = checkpoints.load_params(args.from_checkpoint)
        out = convert.export_hf(model, params, args.to_hf)
        print(f"exported {args.from_checkpoint} ({model.kind}) -> {out} (config.json + model.safetensors)")


def _vocab(args: argparse.Namespace) -> None:
    from pathlib import Path

    from t5x_lite.data.sources import DataError
    from t5x_lite.data.vocab import MIN_CHARACTER_COVERAGE, train_vocabulary

    # Checked here too, to name the flags; train_vocabulary refuses a bad or existing --out before any work.
    for flag in ("extra_ids", "max_sentences"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if args.vocab_size <= args.extra_ids:
        raise UserError(f"--vocab_size {args.vocab_size} must exceed --extra_ids {args.extra_ids}")
    if not MIN_CHARACTER_COVERAGE <= args.character_coverage <= 1:
        raise UserError(f"--character_coverage must be in [{MIN_CHARACTER_COVERAGE}, 1] (SentencePiece's range), "
                        f"got {args.character_coverage}")
    try:
        vocab = train_vocabulary(args.input, args.vocab_size, args.out, extra_ids=args.extra_ids,
                                 text_field=args.text_field, byte_fallback=not args.no_byte_fallback,
                                 max_sentences=args.max_sentences, character_coverage=args.character_coverage)
    except (RuntimeError, ValueError) as e:  # e.g. a corpus too small for the vocabulary; names the file
        if isinstance(e, DataError):
            raise
        raise UserError(str(e).splitlines()[0]) from e
    sentinel = f"; <extra_id_0> = {vocab.sentinel_id(0)}" if vocab.extra_ids else ""
    print(f"trained {vocab.model_file} and {Path(vocab.model_file).with_suffix('.vocab')}: {vocab.num_pieces} "
          f"SentencePiece pieces + {args.extra_ids} sentinels = vocab_size {vocab.vocab_size} "
          f"(pad 0, eos 1, unk 2{sentinel})")


def _split_gin_flags(extra: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for arg in extra:
        if not arg.startswith("--gin.") or "=" not in arg:
            raise UserError(f"unrecognized argument {arg!r} (gin overrides look like --gin.KEY=VALUE)")
        key, value = arg[len("--gin."):].split("=", 1)
        pairs.append((key, value))
    return pairs


def _parse_run(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from t5x_lite import config, startup

    startup.enable_compilation_cache()  # train, eval and infer compile; vocab and convert need no JAX

    if not args.gin_file:
        example = "experiments/quickstart.gin" if args.command == "train" else f"runs/{args.command}.gin"
        raise UserError(f"{args.command} needs at least one --gin_file (e.g. {example})")
    search = [p for item in args.gin_search_paths for p in item.split(",") if p]
    pairs = _split_gin_flags(extra)
    bindings = [(f"--gin_bindings={b[:40]!r}" if len(b) <= 40 else f"--gin_bindings={b[:37]!r}...", b)
                for b in args.gin_bindings]
    bindings += [(f"--gin.{key}", text) for (key, _), text in zip(pairs, config.flag_bindings(pairs))]
    config.check_macros(config.parse(args.gin_file, bindings, search, finalize=False))


def _train(args: argparse.Namespace, extra: Sequence[str]) -> None:
    import gin

    from t5x_lite import config
    from t5x_lite.training import distributed

    # Multi-host: from the flags, else JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, else a
    # detected launcher (SLURM, Open MPI, TPU slice); a no-op for one process. Must precede any JAX work.
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    _parse_run(args, extra)
    result = config.CONFIGURED["train"](config_text=gin.config_str())  # written once the run has started
    if "loss" not in result.metrics:
        print(f"nothing to train: {result.model_dir} already holds step {result.step} = train_steps")
        return
    print(f"trained to step {result.step}; final loss {result.metrics['loss']:.4f}; "
          f"checkpoints, metrics and config.gin in {result.model_dir}")


def _eval(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from t5x_lite import config

    _parse_run(args, extra)
    result = config.CONFIGURED["eval"]()
    metrics = {k: round(v, 4) if isinstance(v, float) else v for k, v in result["metrics"].items()}
    print(f"metrics: {metrics}")
    predictions = result["predictions_path"]
    print(f"wrote {result['metrics_path']}" + (f" and {os.path.basename(predictions)} beside it" if predictions else
                                               " (the loss only: this task decodes nothing)"))


def _infer(args: argparse.Namespace, extra: Sequence[str]) -> None:
    import gin

    from t5x_lite import config

    _parse_run(args, extra)
    if args.score:
        gin.bind_parameter("infer_checkpoint.score_targets", True)
    result = config.CONFIGURED["infer"]()
    print(f"wrote {result['num_examples']} {'scores' if args.score else 'predictions'} to {result['path']}")


def _submit(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from t5x_lite import config

    _parse_run(args, extra)
    result = config.CONFIGURED["submit"]()
    unreadable = sum(f["unreadable"] for f in result["files"].values())
    print(f"wrote {result['zip']}: {', '.join(result['files'])}"
          + (f"; {unreadable} predictions named no label (written as the first one)" if unreadable else "")
          + (f"; the leaderboard also expects {', '.join(result['missing'])}" if result["missing"] else ""))


def _count(params) -> int:
    import jax
    import numpy as np

    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t5x_lite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="import a Hugging Face directory or export a checkpoint to one")
    p.add_argument("--from_hf", metavar="DIR", help="local HF directory: config.json + model.safetensors/.bin")
    p.add_argument("--to", metavar="CKPT_DIR", help="where to write the t5x_lite checkpoint")
    p.add_argument("--from", dest="from_checkpoint", metavar="CKPT_DIR", help="t5x_lite params checkpoint")
    p.add_argument("--to_hf", metavar="DIR", help="where to write the HF directory")
    p.set_defaults(func=_convert)

    v = sub.add_parser("vocab", help="train a SentencePiece vocabulary (T5 layout) on local text")
    v.add_argument("--input", required=True, action="append", metavar="GLOB",
                   help="text/JSONL/TSV/CSV files, .gz/.bz2 fine; repeat for several globs")
    v.add_argument("--vocab_size", required=True, type=int, help="total ids, sentinels included (T5: 32100)")
    v.add_argument("--out", required=True, metavar="PREFIX",
                   help="writes PREFIX.model and PREFIX.vocab (never over existing files)")
    v.add_argument("--extra_ids", type=int, default=100, help="sentinels on top of the vocabulary")
    v.add_argument("--text_field", default=None, help="field holding the text in JSONL/TSV/CSV")
    v.add_argument("--max_sentences", type=int, default=0, help="train on the first N >= 1 documents (0: all)")
    v.add_argument("--no_byte_fallback", action="store_true", help="no byte pieces (needed below ~400 pieces)")
    v.add_argument("--character_coverage", type=float, default=0.9999,
                   help="share of the text's characters that get pieces, 0.98 to 1 (default 0.9999); the rest "
                        "become bytes or unk")
    v.set_defaults(func=_vocab)

    t = sub.add_parser("train", help="train (pretrain or fine-tune) from gin files; resumes an existing MODEL_DIR",
                       epilog="Override any binding with --gin.KEY=VALUE, e.g. --gin.TRAIN_STEPS=100 "
                              "--gin.MODEL_DIR=/tmp/run (strings need no extra quotes).")
    t.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
    t.add_argument("--gin_bindings", action="append", default=[], help="a raw gin binding (repeatable)")
    t.add_argument("--gin_search_paths", action="append", default=[], help="extra gin search paths (comma list)")
    t.add_argument("--coordinator_address", default=None, help="multi-host: HOST:PORT of process 0")
    t.add_argument("--num_processes", type=int, default=None, help="multi-host: number of processes")
    t.add_argument("--process_id", type=int, default=None, help="multi-host: this process's index")
    t.set_defaults(func=_train, accepts_gin_flags=True)

    for name, fn, text in (("eval", _eval, "evaluate a checkpoint on a task (metrics JSON + predictions)"),
                           ("infer", _infer, "decode or score a task's examples with a checkpoint (JSONL)"),
                           ("submit", _submit, "predict GLUE's or SuperGLUE's test splits: the leaderboard's zip")):
        example = "--gin.BENCHMARK=glue" if name == "submit" else "--gin.TASK=bundled_sentiment"
        p = sub.add_parser(name, help=text, epilog="Override bindings with --gin.KEY=VALUE, e.g. "
                                                    f"--gin.CHECKPOINT=/tmp/run {example}")
        p.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
        p.add_argument("--gin_bindings", action="append", default=[], help="a raw gin binding (repeatable)")
        p.add_argument("--gin_search_paths", action="append", default=[], help="extra gin search paths")
        if name == "infer":
            p.add_argument("--score", action="store_true", help="log-likelihood of the given targets instead")
        p.set_defaults(func=fn, accepts_gin_flags=True)
    return parser


def _is_a_call_the_config_made(error: TypeError) -> bool:
    """A setting's fault: a checked type (``ConfigTypeError``), or gin calling a configurable with arguments
    its signature refuses (the error comes from gin's own frame, before any of the callee's code runs)."""
    from t5x_lite.errors import ConfigTypeError

    if isinstance(error, ConfigTypeError):
        return True
    import gin

    frames = traceback.extract_tb(error.__traceback__)
    gin_code = os.path.dirname(os.path.abspath(gin.__file__)) + os.sep
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(gin_code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from t5x_lite import startup

    startup.tune_malloc()  # before anything starts JAX's threads (see startup)
    from t5x_lite.convert.hf_io import HFDirectoryError
    from t5x_lite.convert.t5 import ConversionError
    from t5x_lite.data.sources import DataError
    from t5x_lite.training.checkpoints import CheckpointError

    from t5x_lite.errors import ConfigError
    from t5x_lite.training.train import TrainingError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if getattr(args, "accepts_gin_flags", False):
            args.func(args, extra)
        else:
            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.func(args)
    except (UserError, HFDirectoryError, ConversionError, CheckpointError, DataError, OSError,
            ConfigError, TrainingError, TypeError) as e:
        if isinstance(e, TypeError) and not _is_a_call_the_config_made(e):
            raise  # a bug, not a setting: keep the traceback
        # gin appends "In call to configurable ..." lines; the first line is the message.
        message = (str(e).strip().splitlines() or [type(e).__name__])[0]
        entry = {"train": "train(", "eval": "evaluate_checkpoint(", "infer": "infer_checkpoint(",
                 "submit": "submit_checkpoint("}.get(args.command)
        if isinstance(e, TypeError) and entry and message.startswith(entry) and "required keyword-only" in message:
            run_config = "runs/pretrain.gin or another runs/*.gin" if args.command == "train" else \
                f"runs/{args.command}.gin"
            message += f" (a run config binds them: --gin_file={run_config})"
        print(f"t5x_lite {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
