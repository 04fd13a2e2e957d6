"""Candidate t5x_lite speed-ups, run as extra arms of ``train_step.py --variant NAME``.

A variant is a set of monkeypatches (applied inside the t5x_lite worker process
after t5x_lite is imported, before anything is traced), extra gin bindings,
and/or extra environment variables for the worker process. Nothing here edits
t5x_lite: a variant that wins is a change to propose, with its measured effect.

Variants (see benchmarks/RESULTS.md for the numbers):

- ``ynn_dot``: compile the train step with the XLA:CPU option
  ``xla_cpu_experimental_ynn_fusion_type = [LIBRARY_FUSION_TYPE_DOT]``
  (passed as ``jax.jit(..., compiler_options=...)``, exactly what
  ``Trainer.step`` would do). With the default YNNPACK fusion set, XLA fuses
  element-wise backward ops (the gated-GELU derivative, softmax backward) into
  loop fusions that write a *transposed* copy for the weight-gradient dots; those
  fusions run an order of magnitude slower than the same element-wise work in
  natural layout. With only ``dot`` fusions handed to YNNPACK, the transposes
  are done by YNNPACK's packing instead.
- ``einsum``: ``models.T5Config.attention_impl = 'einsum'`` (t5x_lite's own
  attention instead of ``jax.nn.dot_product_attention``'s vmapped XLA path).
- ``int_xent``: cross-entropy from integer labels (no ``[B, T, V]`` one-hot
  input, no ``argmax`` for accuracy: a token is correct when its logit equals
  the row max); same loss, gradient and metrics (ties aside).
- ``best``: ``ynn_dot`` + ``einsum`` + ``int_xent``.
- ``best_malloc``: ``best`` plus glibc malloc tunables in the worker's
  environment (two arenas, no mmap for big blocks, no trimming), so XLA:CPU's
  per-step temporaries reuse already-mapped pages instead of page-faulting
  ~4 GB of fresh memory every step. Not a t5x_lite code change.
"""

from __future__ import annotations

from typing import Callable

CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
MALLOC_TUNABLES = "glibc.malloc.arena_max=2:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
EINSUM = "models.T5Config.attention_impl = 'einsum'"


def patch_ynn_dot() -> None:
    """Trainer.step's jit gets ``compiler_options`` (the proposed trainer.py change, applied from outside)."""
    import jax

    from t5x_lite.training import partitioning
    from t5x_lite.training import trainer as trainer_lib

    original_step = trainer_lib.Trainer.step

    def step(self, state, batch):
        if self._step_fn is None:
            shardings = self._state_shardings
            if shardings is None:
                raise RuntimeError("call init() or state_shardings() before step()")
            self._step_fn = jax.jit(
                self._train_step,
                in_shardings=(shardings, partitioning.batch_sharding(self.mesh, self.rules)),
                out_shardings=(shardings, partitioning.replicated(self.mesh)),
                donate_argnums=(0,),
                compiler_options=CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None,
            )
        return original_step(self, state, batch)

    trainer_lib.Trainer.step = step


def patch_int_xent() -> None:
    """Integer-label cross-entropy with z-loss for ``label_smoothing == 0`` (the proposed losses.py change)."""
    import jax
    import jax.numpy as jnp

    from t5x_lite.models import model as model_lib
    from t5x_lite.training import losses

    @jax.custom_vjp
    def xent(logits, targets, z_loss):
        return _fwd(logits, targets, z_loss)[0]

    def _fwd(logits, targets, z_loss):
        max_logit = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
        log_z = jnp.log(jnp.sum(jnp.exp(logits - max_logit[..., None]), axis=-1)) + max_logit
        target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        z = z_loss * jnp.square(log_z)
        return (log_z - target_logit + z, z, target_logit >= max_logit), (logits, targets, log_z, z_loss)

    def _bwd(res, g):
        logits, targets, log_z, z_loss = res
        probs = jnp.exp(logits - log_z[..., None])
        onehot = targets[..., None] == jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
        grad = probs * (1.0 + 2.0 * z_loss * log_z[..., None]) - onehot.astype(logits.dtype)
        return grad * g[0][..., None], None, None

    xent.defvjp(_fwd, _bwd)
    original = losses.weighted_mean_loss

    def weighted_mean_loss(logits, targets, weights=None, *, z_loss=0.0, label_smoothing=0.0, normalizer=None):
        if label_smoothing:
            return original(logits, targets, weights, z_loss=z_loss, label_smoothing=label_smoothing,
                            normalizer=normalizer)
        per_token, z, correct = xent(logits.astype(jnp.float32), targets.astype(jnp.int32), jnp.float32(z_loss))
        weights = jnp.ones(targets.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
        num_tokens = jnp.sum(weights)
        denom = jnp.float32(normalizer) if normalizer is not None else jnp.maximum(num_tokens, 1.0)
        loss = jnp.sum(per_token * weights) / denom
        return loss, {
            "loss": loss,
            "z_loss": jnp.sum(z * weights) / denom,
            "accuracy": jnp.sum(correct.astype(jnp.float32) * weights) / jnp.maximum(num_tokens, 1.0),
            "num_tokens": num_tokens,
        }

    model_lib.weighted_mean_loss = weighted_mean_loss


def patch_mallopt() -> None:
    """The GLIBC_TUNABLES of ``malloc`` set from inside the process with ``mallopt`` (what t5x_lite could do)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    assert libc.mallopt(m_mmap_max, 0) == 1
    assert libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1)) == 1


VARIANTS: dict[str, dict] = {
    "ynn_dot": {"patches": (patch_ynn_dot,), "bindings": (), "env": {}},
    "einsum": {"patches": (), "bindings": (EINSUM,), "env": {}},
    "int_xent": {"patches": (patch_int_xent,), "bindings": (), "env": {}},
    "best": {"patches": (patch_ynn_dot, patch_int_xent), "bindings": (EINSUM,), "env": {}},
    "malloc": {"patches": (), "bindings": (), "env": {"GLIBC_TUNABLES": MALLOC_TUNABLES}},
    "mallopt": {"patches": (patch_mallopt,), "bindings": (), "env": {}},
    "best_malloc": {"patches": (patch_ynn_dot, patch_int_xent), "bindings": (EINSUM,),
                    "env": {"GLIBC_TUNABLES": MALLOC_TUNABLES}},
}


def _get(name: str) -> dict:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
    return VARIANTS[name]


def env_for(name: str) -> dict:
    return dict(_get(name)["env"])


def bindings_for(name: str) -> tuple:
    return tuple(_get(name)["bindings"])


def apply(name: str) -> None:
    patch: Callable[[], None]
    for patch in _get(name)["patches"]:
        patch()
