"""Run N identical layers as a Python loop or as ``nn.scan``, optionally rematerialized.

The loop names layers ``layers_{i}``; the scan keeps one ``layers`` subtree whose
leaves have a leading (logical axis ``layers``) dimension. ``stack_layer_params``
and ``unstack_layer_params`` convert between the two layouts, so a checkpoint
written by one runs on the other with the same numbers.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

REMAT_POLICIES = {
    "full": None,  # save nothing, recompute everything
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def run_layers(
    parent_layer_cls: type,
    num_layers: int,
    *,
    scan: bool,
    remat_policy: str,
    layer_kwargs: Mapping[str, Any],
    carry: jax.Array,
    broadcast_args: tuple,
) -> jax.Array:
    """Apply ``num_layers`` copies of ``parent_layer_cls``; call from a compact method.

    Each layer maps ``(carry, *broadcast_args) -> (carry, None)``; static options
    (deterministic, decode) are module fields so remat and scan see only arrays.
    """
    layer_cls = parent_layer_cls
    if remat_policy != "none":
        layer_cls = nn.remat(layer_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=not scan)
    if scan:
        scanned = nn.scan(
            layer_cls,
            variable_axes={"params": 0, "cache": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * len(broadcast_args),
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        carry, _ = scanned(name="layers", **layer_kwargs)(carry, *broadcast_args)
        return carry
    for i in range(num_layers):
        carry, _ = layer_cls(name=f"layers_{i}", **layer_kwargs)(carry, *broadcast_args)
    return carry


def _is_layer_key(key: str) -> bool:
    return key.startswith("layers_") and key[len("layers_") :].isdigit()


def stack_layer_params(tree: Any) -> Any:
    """Loop layout (``layers_0``, ``layers_1`` ...) -> scan layout (``layers`` with a leading axis)."""
    if not isinstance(tree, Mapping):
        return tree
    layer_keys = sorted((k for k in tree if _is_layer_key(k)), key=lambda k: int(k.split("_")[1]))
    out = {k: stack_layer_params(v) for k, v in tree.items() if not _is_layer_key(k)}
    if layer_keys:
        out["layers"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[tree[k] for k in layer_keys])
    return out


def unstack_layer_params(tree: Any) -> Any:
    """Scan layout -> loop layout; the inverse of ``stack_layer_params``."""
    if not isinstance(tree, Mapping):
        return tree
    out = {k: unstack_layer_params(v) for k, v in tree.items() if k != "layers"}
    if "layers" in tree:
        stacked = tree["layers"]
        n = jax.tree_util.tree_leaves(stacked)[0].shape[0]
        for i in range(n):
            out[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
    return out
