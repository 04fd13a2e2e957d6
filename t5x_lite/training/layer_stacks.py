"""Run an optimizer on a layer loop's parameters stacked per weight, the layout ``nn.scan`` keeps.

Why. A model whose layers are a Python loop (``scan_layers = False``, the
default: faster per step on CPU) has one leaf per weight per layer, 190 for T5
1.1 small, and an optax optimizer works leaf by leaf: XLA compiles a handful of
small ops per leaf (moment updates, per-matrix RMS, clipping, norms). On CPU,
loading a compiled program from the persistent cache costs time that grows
faster than linearly with its op count (XLA rebuilds each op's runtime object
and the dependency graph between them). Stacking the layers' copies of each
weight first (``layers_0`` ... ``layers_N`` -> ``layers`` with a leading axis,
``models.stacking.stack_layer_params``) leaves the optimizer 29 leaves: T5
small's train step went from 4,643 to 2,809 ops, its cached program loads in
1.2 s instead of 3.2 s, and the step itself ran no slower (benchmarks/RESULTS.md).

The optimizer state is kept in the loop layout, so checkpoints do not change:
every update stacks it, runs the optimizer, and unstacks the new state,
following the two state layouts that ``inner.init`` gives for the two parameter
layouts. The stacking and unstacking are copies of the gradients, parameters
and state, small next to a step's work.

Only for optimizers that treat a ``layers`` axis as a batch of matrices: the
ones in ``optimizers`` do (``layer_axis_mask``: per-layer RMS and factoring),
and element-wise ones (Adam's moments) do not care. A state slot that has no
layer axis in the stacked layout must not depend on values (optax's ``(1,)``
placeholders for unfactored statistics): each layer gets it back.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from t5x_lite.models import stacking

PyTree = Any
_LAYERS = jax.tree_util.DictKey("layers")


def _layer_paths(scan_path: tuple, loop_leaves: dict) -> list:
    """The loop-layout paths one scan-layout path stands for: ``layers`` -> ``layers_0``, ``layers_1`` ..."""
    if _LAYERS not in scan_path:
        return [scan_path]
    k = scan_path.index(_LAYERS)
    paths = []
    while (path := scan_path[:k] + (jax.tree_util.DictKey(f"layers_{len(paths)}"),) + scan_path[k + 1:]) in loop_leaves:
        paths.append(path)
    return paths


def _stack_state(loop_state: PyTree, scan_template: PyTree) -> tuple[PyTree, list]:
    """``loop_state`` rearranged into ``scan_template``'s structure; also the plan to undo it."""
    loop_leaves = dict(jax.tree_util.tree_flatten_with_path(loop_state)[0])
    flat, treedef = jax.tree_util.tree_flatten_with_path(scan_template)
    leaves, plan = [], []
    for path, template in flat:
        members = _layer_paths(path, loop_leaves)
        if not members:
            raise ValueError(f"optimizer state {jax.tree_util.keystr(path)}: no layers_0 ... in the loop layout")
        values = [loop_leaves[p] for p in members]
        shapes = {jnp.shape(v) for v in values}
        stacked = _LAYERS in path and jnp.shape(template) == (len(values),) + jnp.shape(values[0])
        if not stacked and shapes != {jnp.shape(template)}:
            raise ValueError(
                f"optimizer state {jax.tree_util.keystr(path)}: shape {jnp.shape(template)} with layers stacked, "
                f"{sorted(shapes)} per layer; this optimizer cannot run on stacked layers")
        leaves.append(jnp.stack(values) if stacked else values[0])
        plan.append((members, stacked))
    return jax.tree_util.tree_unflatten(treedef, leaves), plan


def _unstack_state(scan_state: PyTree, plan: list, loop_template: PyTree) -> PyTree:
    out = {}
    for leaf, (members, stacked) in zip(jax.tree_util.tree_leaves(scan_state), plan):
        for i, path in enumerate(members):
            out[path] = leaf[i] if stacked else leaf
    flat, treedef = jax.tree_util.tree_flatten_with_path(loop_template)
    return jax.tree_util.tree_unflatten(treedef, [out[path] for path, _ in flat])


def on_stacked_layers(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` applied to params, updates and state with each weight's layers stacked (see module docstring).

    ``init`` is ``inner.init`` (the state stays in the params' own layout); on
    params that are already stacked, or have no ``layers_<i>`` keys, ``update``
    is ``inner.update``.
    """

    def update_fn(updates, state, params=None):
        stacked_updates = stacking.stack_layer_params(updates)
        if jax.tree_util.tree_structure(stacked_updates) == jax.tree_util.tree_structure(updates):
            return inner.update(updates, state, params)
        stacked_params = None if params is None else stacking.stack_layer_params(params)
        abstract_updates = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), stacked_updates)
        scan_template = jax.eval_shape(inner.init, abstract_updates)
        stacked_state, plan = _stack_state(state, scan_template)
        new_updates, new_state = inner.update(stacked_updates, stacked_state, stacked_params)
        return stacking.unstack_layer_params(new_updates), _unstack_state(new_state, plan, state)

    return optax.GradientTransformation(inner.init, update_fn)
