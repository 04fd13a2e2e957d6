"""``t5x_lite`` command line: ``t5x_lite convert ...`` (train/eval/infer/vocab follow).

Errors that a user can fix (a missing file, a bad key) print one line naming the
file or key and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def _convert(args: argparse.Namespace) -> None:
    from t5x_lite import convert
    from t5x_lite.training import checkpoints

    if bool(args.from_hf) == bool(args.from_checkpoint):
        raise UserError("convert: give exactly one of --from_hf DIR (import) or --from CKPT_DIR (export)")
    if args.from_hf:
        if not args.to:
            raise UserError("convert --from_hf needs --to CKPT_DIR")
        model, params = convert.import_hf(args.from_hf)
        out = checkpoints.save_params(args.to, params, model)
        print(f"imported {args.from_hf} ({model.kind}, {_count(params):,} parameters) -> {out}")
        print(f"model gin config: {out / checkpoints.MODEL_GIN}")
    else:
        if not args.to_hf:
            raise UserError("convert --from needs --to_hf DIR")
        model, params = checkpoints.load_params(args.from_checkpoint)
        out = convert.export_hf(model, params, args.to_hf)
        print(f"exported {args.from_checkpoint} ({model.kind}) -> {out} (config.json + model.safetensors)")


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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from t5x_lite.convert.hf_io import HFDirectoryError
    from t5x_lite.convert.t5 import ConversionError
    from t5x_lite.training.checkpoints import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, HFDirectoryError, ConversionError, CheckpointError, FileNotFoundError) as e:
        print(f"t5x_lite {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
