"""`make demo` (foundation stage): build the tiny T5 1.1 from its gin file, run it,
and prove the Hugging Face round trip on it.

Training lands with the training issue; until then this shows what works:
gin -> model -> jit forward pass -> export to a Hugging Face directory ->
`transformers` loads it and computes the same logits -> import back.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from t5x_lite import config, convert  # noqa: E402

SPM = Path(__file__).resolve().parent.parent / "t5x_lite" / "data" / "bundled" / "spiece.model"
TEXT = "The quick brown fox jumps over the lazy dog, and the dog does not mind."


def _tokens(vocab_size: int) -> tuple[np.ndarray, str]:
    if SPM.is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(SPM))
        ids = np.array(sp.encode(TEXT) + [1])
        return ids[None], f"bundled SentencePiece model ({sp.get_piece_size()} pieces)"
    rng = np.random.default_rng(0)
    return rng.integers(3, vocab_size, (1, 16)), "random token ids (bundled vocabulary not found)"


def main() -> int:
    t0 = time.time()
    model = config.model_from_gin(["models/t5_1_1/tiny.gin"])
    cfg = model.config
    print(f"[1/4] model from gin_configs/models/t5_1_1/tiny.gin: d_model={cfg.d_model}, "
          f"{cfg.num_encoder_layers}+{cfg.num_decoder_layers} layers, vocab {cfg.vocab_size}")
    ids, source = _tokens(cfg.vocab_size)
    batch = {
        "encoder_input_tokens": jnp.asarray(ids, jnp.int32),
        "decoder_input_tokens": jnp.asarray(np.concatenate([[[0]], ids[:, :-1]], axis=1), jnp.int32),
        "decoder_target_tokens": jnp.asarray(ids, jnp.int32),
    }
    params = model.init(jax.random.key(0), batch)
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    loss_fn = jax.jit(model.loss_fn)
    loss, metrics = loss_fn(params, batch)
    print(f"[2/4] jit forward pass on {ids.shape[1]} tokens from {source}: {n:,} parameters, "
          f"untrained loss {float(loss):.3f} (ln(vocab) = {np.log(cfg.vocab_size):.3f})")

    import torch
    from transformers import T5ForConditionalGeneration

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = convert.export_hf(model, params, Path(tmp) / "hf")
        hf = T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
        with torch.no_grad():
            hf_logits = hf(input_ids=torch.tensor(ids), decoder_input_ids=torch.tensor(
                np.asarray(batch["decoder_input_tokens"]))).logits.numpy()
        ours = np.asarray(model.logits(params, batch))
        diff = float(np.abs(ours - hf_logits).max())
        print(f"[3/4] exported to a Hugging Face directory; transformers {__import__('transformers').__version__} "
              f"loads it and its logits differ from ours by at most {diff:.2e}")
        model2, params2 = convert.import_hf(hf_dir)
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                         jax.tree_util.tree_leaves(params2)))
        print(f"[4/4] imported it back: parameters identical = {same}, config identical = {model2.config == cfg}")
    ok = diff < 1e-4 and same
    print(f"demo {'passed' if ok else 'FAILED'} in {time.time() - t0:.1f}s "
          "(training, fine-tuning and decoding arrive with the next issues; see README status)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
