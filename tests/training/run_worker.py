"""A tiny training run in its own process, for the kill/resume test (not collected by pytest).

    python run_worker.py MODEL_DIR TRAIN_STEPS

Prints "STEP <n>" after every step so the parent can kill it mid-run.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", str(Path(__file__).resolve().parents[2] / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

from t5x_lite.models.config import T5Config  # noqa: E402
from t5x_lite.models.model import EncoderDecoderModel  # noqa: E402
from t5x_lite.training.optimizers import make_optimizer  # noqa: E402
from t5x_lite.training.train import train  # noqa: E402

TINY = T5Config(vocab_size=8000, d_model=32, d_ff=48, num_heads=2, d_kv=16, num_encoder_layers=1,
                num_decoder_layers=1, mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                dropout_rate=0.1, relative_attention_num_buckets=8, relative_attention_max_distance=16)


def main(model_dir: str, steps: int) -> None:
    train(model=EncoderDecoderModel(config=TINY), task="bundled_corpus_span_3_15_u_u",
          feature_lengths={"inputs": 32, "targets": 8}, batch_size=4, train_steps=steps, model_dir=model_dir,
          optimizer=make_optimizer("adafactor_t5", learning_rate=1e-2), checkpoint_every=2, log_every=1,
          progress=False, step_callback=lambda step, m: print(f"STEP {step}", flush=True))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
