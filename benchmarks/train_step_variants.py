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
  are done by YNNPACK's packing instead. (``layers.dense_dot`` now avoids those
  transposed fusions in the model itself.)
- ``einsum``: ``models.T5Config.attention_impl = 'einsum'`` (the reference
  attention that JAX differentiates, instead of the default ``'xla'`` path's
  hand-written backward pass; before 2026-11-27 ``'xla'`` meant
  ``jax.nn.dot_product_attention``).
- ``best``: ``ynn_dot`` + ``einsum``. (An ``int_xent`` variant, cross-entropy from
  integer labels, was adopted: ``t5x_lite.training.losses`` now works that way.)
- ``glibc_malloc``: t5x_lite with glibc's default malloc settings
  (``T5X_LITE_MALLOC_TUNING=0``), i.e. without what ``t5x_lite.startup``
  sets at the CLI's start (and the benchmark's t5x_lite worker likewise).
- ``thp``: glibc's ``hugetlb=1`` tunable (transparent huge pages for malloc's
  heap, where the kernel's THP mode is ``madvise``).
- ``per_layer_optimizer``: the optimizer and the grad/update norm metrics run
  leaf by leaf on the layer loop's parameters, as before ``training.layer_stacks``
  stacked each weight's layers for them.
- ``per_layer_init``: parameter init draws each layer's weights separately (the
  layer loop's own ``init``), as before ``BaseModel.init_params`` drew them in
  the scan layout and unstacked them.
- ``plain_attention_layouts``: attention's products as plain einsums on
  [B, L, N, H] operands (``layers._heads_first_pays`` always False), as before
  ``layers._scores`` and ``layers._weighted_sum`` moved the heads next to the
  batch axis for four of them (``benchmarks/attention_layouts.py`` times one layer both ways).
"""

from __future__ import annotations

from typing import Callable

CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
EINSUM = "models.T5Config.attention_impl = 'einsum'"


def patch_ynn_dot() -> None:
    """Trainer's step jit gets ``compiler_options`` (the proposed trainer.py change, applied from outside)."""
    import functools
    from unittest import mock

    import jax

    from t5x_lite.training import trainer as trainer_lib

    original = trainer_lib.Trainer._jit_step
    options = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None

    def _jit_step(self):
        with mock.patch.object(trainer_lib.jax, "jit", functools.partial(jax.jit, compiler_options=options)):
            return original(self)

    trainer_lib.Trainer._jit_step = _jit_step


def patch_per_layer_optimizer() -> None:
    """The optimizer and the norm metrics leaf by leaf, as before ``training.layer_stacks``."""
    import functools

    import optax

    from t5x_lite.training import optimizers
    from t5x_lite.training import trainer as trainer_lib

    original = optimizers.make_optimizer

    @functools.wraps(original)
    def make_optimizer(*args, **kwargs):
        return original(*args, **{**kwargs, "stack_layers": False})

    optimizers.make_optimizer = make_optimizer
    trainer_lib._grad_norm = optax.global_norm


def patch_per_layer_init() -> None:
    """Init through the model's own (loop-layout) module: one random draw per layer's weight."""
    import flax.linen as nn

    from t5x_lite.models import model as model_lib

    def init_params(self, rng, batch):
        variables = self.module.init({"params": rng, "dropout": rng}, **self._apply_kwargs(batch))
        return nn.unbox(variables["params"])

    model_lib.BaseModel.init_params = init_params


def patch_plain_attention_layouts() -> None:
    """Attention's products as ``[B, L, N, H]`` einsums, as before the heads-first layouts."""
    from t5x_lite.models import layers

    layers._heads_first_pays = never


def never(num_queries: int) -> bool:
    """A ``layers._heads_first_pays`` that keeps every product in the [B, L, N, H] layout."""
    return False


VARIANTS: dict[str, dict] = {
    "ynn_dot": {"patches": (patch_ynn_dot,), "bindings": (), "env": {}},
    "einsum": {"patches": (), "bindings": (EINSUM,), "env": {}},
    "best": {"patches": (patch_ynn_dot,), "bindings": (EINSUM,), "env": {}},
    "glibc_malloc": {"patches": (), "bindings": (), "env": {"T5X_LITE_MALLOC_TUNING": "0"}},
    "thp": {"patches": (), "bindings": (), "env": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}},
    "per_layer_optimizer": {"patches": (patch_per_layer_optimizer,), "bindings": (), "env": {}},
    "per_layer_init": {"patches": (patch_per_layer_init,), "bindings": (), "env": {}},
    "plain_attention_layouts": {"patches": (patch_plain_attention_layouts,), "bindings": (), "env": {}},
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
