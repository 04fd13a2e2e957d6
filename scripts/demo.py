"""`make demo`: pretrain a tiny T5 1.1, fine-tune it on sentiment, and compare with no pretraining.

Every step is an ordinary `t5x_lite` command (printed as it runs), in a fresh
runs/demo-<time> directory:

1. pretrain the tiny T5 1.1 with span corruption on the bundled corpus
   (`experiments/objectives/span_3_15_u_u.gin`, shortened);
2. fine-tune it on the bundled Rotten Tomatoes sentiment task, text to text
   (`experiments/objectives/finetune.gin`);
3. fine-tune the same model from random init with the same recipe (the
   no-pretraining baseline);
4. evaluate both on the test split, print a few decoded examples, and export the
   pretrained checkpoint to Hugging Face to check that `transformers` computes the
   same logits.

    python scripts/demo.py [--pretrain_steps N] [--finetune_steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
FT_LENGTHS = "{'inputs': 64, 'targets': 4}"


def _run(argv: list[str]) -> None:
    from t5x_lite import cli

    print("      $ t5x_lite " + " ".join(f'"{a}"' if " " in a else a for a in argv), flush=True)
    rc = cli.main(argv)
    if rc:
        raise SystemExit(rc)


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run_dir / "train" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["train/loss"]) for r in rows if r.get("train/loss") is not None]


def _evaluate(checkpoint: Path) -> tuple[dict, list[dict]]:
    _run(["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={checkpoint}", "--gin.TASK=bundled_sentiment",
          f"--gin.TASK_FEATURE_LENGTHS={FT_LENGTHS}", "--gin.evaluate_checkpoint.split=test",
          "--gin.evaluation.DecodeOptions.max_decode_length=4"])
    # the newest results: named after the step eval read (the newest readable checkpoint)
    metrics_path = max((checkpoint / "eval").glob("metrics-bundled_sentiment-test-step*.json"),
                       key=lambda p: p.stat().st_mtime)
    predictions_path = metrics_path.with_name(metrics_path.name.replace("metrics-", "predictions-")).with_suffix(
        ".jsonl")
    metrics = json.loads(metrics_path.read_text())
    rows = [json.loads(x) for x in predictions_path.read_text().splitlines()]
    return metrics, rows


def _hf_check(pretrain_dir: Path) -> float:
    """Export the pretrained checkpoint to HF and compare logits on a corrupted validation sentence."""
    import numpy as np
    import torch
    from transformers import T5ForConditionalGeneration

    import t5x_lite.tasks  # noqa: F401
    from t5x_lite import convert
    from t5x_lite.data.pipeline import get_dataset
    from t5x_lite.training import checkpoints

    model, params = checkpoints.load_params(pretrain_dir)
    hf_dir = convert.export_hf(model, params, pretrain_dir / "hf")
    hf = T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
    ds, _ = get_dataset("bundled_corpus_span_3_15_u_u", split="validation", batch_size=1,
                        feature_lengths={"inputs": 64, "targets": 64}, converter=model.feature_converter(),
                        shuffle=False, shard=(0, 1))
    batch = {k: np.asarray(v) for k, v in next(iter(ds)).items()}
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(batch["encoder_input_tokens"]),
                    decoder_input_ids=torch.tensor(batch["decoder_input_tokens"])).logits.numpy()
    ours = np.asarray(model.logits(params, batch))
    return float(np.abs(ours - theirs).max())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrain_steps", type=int, default=400)
    p.add_argument("--finetune_steps", type=int, default=400)
    p.add_argument("--examples", type=int, default=6, help="decoded test examples to print")
    args = p.parse_args(argv)
    t0 = time.time()
    os.chdir(ROOT)
    run_dir = ROOT / "runs" / time.strftime("demo-%Y%m%d-%H%M%S")
    pre, ft, base = run_dir / "pretrain", run_dir / "finetune", run_dir / "baseline"
    ft_common = ["--gin_file=experiments/objectives/finetune.gin", f"--gin.TRAIN_STEPS={args.finetune_steps}",
                 f"--gin.train.checkpoint_every={args.finetune_steps}"]

    print(f"[1/4] pretraining the tiny T5 1.1 with span corruption on the bundled corpus -> {pre}", flush=True)
    # Span corruption of 64 tokens needs about 14 target tokens: 16 instead of the study's 64 (which
    # leaves room for full-text objectives) makes each step about twice as fast.
    _run(["train", "--gin_file=experiments/objectives/span_3_15_u_u.gin", f"--gin.MODEL_DIR={pre}",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
          f"--gin.TRAIN_STEPS={args.pretrain_steps}", "--gin.train.eval_every=0",
          f"--gin.train.checkpoint_every={args.pretrain_steps}"])
    losses = _losses(pre)
    print(f"      loss {losses[0][1]:.3f} at step {losses[0][0]} -> {losses[-1][1]:.3f} at step {losses[-1][0]} "
          f"(ln(8000) = 8.99 for an untrained model)  [{time.time() - t0:.0f}s]", flush=True)

    print(f"[2/4] fine-tuning it on Rotten Tomatoes sentiment -> {ft}", flush=True)
    _run(["train", *ft_common, f"--gin.MODEL_DIR={ft}", f"--gin.INITIAL_CHECKPOINT={pre}"])
    print(f"[3/4] the same fine-tuning from random init (no pretraining) -> {base}  [{time.time() - t0:.0f}s]",
          flush=True)
    _run(["train", *ft_common, f"--gin.MODEL_DIR={base}", "--gin.INITIAL_CHECKPOINT=None"])

    print(f"[4/4] test split (1,275 snippets)  [{time.time() - t0:.0f}s]", flush=True)
    ft_metrics, ft_rows = _evaluate(ft)
    base_metrics, _ = _evaluate(base)
    majority = 100.0 * max(sum(r["targets"] == "positive" for r in ft_rows),
                           sum(r["targets"] == "negative" for r in ft_rows)) / len(ft_rows)
    diff = _hf_check(pre)

    print("\n  decoded test examples (pretrained + fine-tuned model):")
    for r in ft_rows[:args.examples]:
        text = r["inputs"].removeprefix("sentiment: ")
        text = text if len(text) <= 90 else text[:87] + "..."
        print(f"    {r['prediction']!r:>11} (gold {r['targets']!r:>10})  {text}")
    print(f"\n  test accuracy  pretrained + fine-tuned: {ft_metrics['accuracy']:6.2f}%")
    print(f"                 no pretraining:          {base_metrics['accuracy']:6.2f}%")
    print(f"                 majority class:          {majority:6.2f}%")
    print(f"  exported the pretrained model to {pre / 'hf'}; transformers' logits differ from ours by {diff:.1e}")
    ok = diff < 1e-4 and losses[-1][1] < losses[0][1] and ft_metrics["invalid_predictions"] == 0
    print(f"\ndemo {'finished' if ok else 'FAILED'} in {time.time() - t0:.0f}s. TensorBoard: "
          f"tensorboard --logdir {run_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
