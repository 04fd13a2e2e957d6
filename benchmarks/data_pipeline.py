"""Input-pipeline throughput on one CPU core: span corruption (and packing) as training sees it.

    python benchmarks/data_pipeline.py [--batches 200]

Pins itself to one core, builds the real pipeline on the bundled corpus with the
bundled vocabulary, and prints examples/s and tokens/s (inputs + targets, EOS
and padding included), plus the one-off cost of tokenizing the corpus. The
reference consumer is T5 v1.1 small training on this 2-core machine: Hugging
Face PyTorch trains at about 1.1-1.4k tokens/s (shared/REFERENCES.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

TRAINING_TOKENS_PER_S = 1400  # the fast end of HF's measured range: the margin below is conservative


def _measure(task: str, lengths: dict, converter, batches: int, pack: bool, batch_size: int = 8) -> dict:
    from t5x_lite.data.pipeline import get_dataset

    t0 = time.perf_counter()
    ds, stats = get_dataset(task, split="train", feature_lengths=lengths, batch_size=batch_size, pack=pack,
                            converter=converter, seed=0, shard=(0, 1))
    it = iter(ds)
    first = next(it)  # includes tokenizing the split (cached for later pipelines in this process)
    setup = time.perf_counter() - t0
    for _ in range(5):
        next(it)
    t0 = time.perf_counter()
    examples = tokens = 0
    for _ in range(batches):
        b = next(it)
        seg = b.get("encoder_segment_ids")
        examples += int(seg.max(axis=1).sum()) if seg is not None else b["encoder_input_tokens"].shape[0]
        tokens += int(b["encoder_input_tokens"].size + b["decoder_target_tokens"].size)
    dt = time.perf_counter() - t0
    del first
    return {"task": task, "lengths": lengths, "pack": pack, "batch_size": batch_size, "batches": batches,
            "first_batch_s": round(setup, 2), "examples_per_s": round(examples / dt, 1),
            "tokens_per_s": round(tokens / dt), "margin_vs_training": round(tokens / dt / TRAINING_TOKENS_PER_S, 1),
            "truncation": stats.as_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import t5x_lite.tasks  # noqa: F401
    from t5x_lite.data.features import EncDecFeatureConverter

    runs = [
        _measure("bundled_corpus_span_3_15_u_u", {"inputs": 512, "targets": 114}, EncDecFeatureConverter(),
                 args.batches, pack=False),
        _measure("bundled_corpus_ul2", {"inputs": 512, "targets": 512}, EncDecFeatureConverter(pack=True),
                 args.batches, pack=True),
        _measure("bundled_sentiment", {"inputs": 512, "targets": 64}, EncDecFeatureConverter(pack=True),
                 args.batches // 4, pack=True),
    ]
    for r in runs:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
