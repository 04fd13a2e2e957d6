"""`make demo`: pretrain the tiny T5 1.1 on the bundled corpus, then hand it to Hugging Face.

1. `t5x_lite train --gin_file=experiments/quickstart.gin` (span corruption, about 2-3 minutes
   on 2 CPU cores) into a fresh runs/demo-<time> directory; the loss falls as it runs.
2. Export the trained checkpoint to a Hugging Face directory, load it with `transformers`,
   and check that both frameworks compute the same logits on a corrupted validation sentence.

Fine-tuning, decoding and the no-pretraining baseline join this demo with the evaluation issue.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    t0 = time.time()
    from t5x_lite import cli

    run_dir = ROOT / "runs" / time.strftime("demo-%Y%m%d-%H%M%S")
    print(f"[1/2] pretraining the tiny T5 1.1 with span corruption -> {run_dir}", flush=True)
    rc = cli.main(["train", "--gin_file=experiments/quickstart.gin", f"--gin.MODEL_DIR={run_dir}"])
    if rc:
        return rc
    losses = _losses(run_dir)
    print(f"      loss: {losses[0][1]:.3f} at step {losses[0][0]} -> {losses[-1][1]:.3f} at step {losses[-1][0]}"
          f" (ln(vocab) = 8.99 for an untrained model)")

    import numpy as np
    import torch
    from transformers import T5ForConditionalGeneration

    from t5x_lite import convert
    from t5x_lite.training import checkpoints

    model, params = checkpoints.load_params(run_dir)
    hf_dir = convert.export_hf(model, params, run_dir / "hf")
    hf = T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
    batch = _example_batch(model)
    with torch.no_grad():
        hf_logits = hf(input_ids=torch.tensor(batch["encoder_input_tokens"]),
                       decoder_input_ids=torch.tensor(batch["decoder_input_tokens"])).logits.numpy()
    ours = np.asarray(model.logits(params, batch))
    diff = float(np.abs(ours - hf_logits).max())
    print(f"[2/2] exported to {hf_dir}; transformers loads it and its logits differ from ours by {diff:.1e}")
    ok = diff < 1e-4 and losses[-1][1] < losses[0][1]
    print(f"demo {'passed' if ok else 'FAILED'} in {time.time() - t0:.0f}s. TensorBoard: "
          f"tensorboard --logdir {run_dir}/train")
    return 0 if ok else 1


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    import json

    rows = [json.loads(x) for x in (run_dir / "train" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["train/loss"]) for r in rows if r.get("train/loss") is not None]


def _example_batch(model) -> dict:
    import numpy as np

    import t5x_lite.tasks  # noqa: F401
    from t5x_lite.data.pipeline import get_dataset

    ds, _ = get_dataset("bundled_corpus_span_3_15_u_u", split="validation", batch_size=1,
                        feature_lengths={"inputs": 128, "targets": 32}, converter=model.feature_converter(),
                        shuffle=False, shard=(0, 1))
    return {k: np.asarray(v) for k, v in next(iter(ds)).items()}


if __name__ == "__main__":
    sys.exit(main())
