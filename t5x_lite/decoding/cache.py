"""Batch-axis bookkeeping for a decoding cache (a pytree such as Flax's ``cache`` collection).

Decoding loops reorder (beam search), repeat (several decodes per input) and
freeze (rows still waiting for their prompt to end) cache rows. Which axis of a
leaf is the batch axis is not always 0: a scanned layer stack puts the layer
axis first, and scalar counters (``cache_index``) have no batch axis at all. So
every helper here takes ``cache_axes``: a pytree with the cache's structure whose
leaves are the batch axis of the matching cache leaf, or -1 for a leaf without
one. ``None`` means "axis 0 for every leaf with a dimension", which suits a
loop-layout (unscanned) cache and hand-written caches.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
Cache = Any
CacheAxes = Any


def _with_axes(cache: Cache, cache_axes: Optional[CacheAxes]):
    leaves, treedef = jax.tree_util.tree_flatten(cache)
    if cache_axes is None:
        axes = [0 if jnp.ndim(x) > 0 else -1 for x in leaves]
    else:
        axes = treedef.flatten_up_to(cache_axes)
    return leaves, treedef, axes


def map_batch_axis(fn: Callable[[Array, int], Array], cache: Cache, cache_axes: Optional[CacheAxes] = None) -> Cache:
    """Apply ``fn(leaf, batch_axis)`` to every leaf that has a batch axis; others pass through."""
    leaves, treedef, axes = _with_axes(cache, cache_axes)
    return treedef.unflatten([x if ax < 0 else fn(x, ax) for x, ax in zip(leaves, axes)])


def gather_rows(cache: Cache, indices: Array, cache_axes: Optional[CacheAxes] = None) -> Cache:
    """Row ``i`` of the result is row ``indices[i]`` of ``cache`` (beam reordering)."""
    return map_batch_axis(lambda x, ax: jnp.take(x, indices, axis=ax), cache, cache_axes)


def repeat_rows(cache: Cache, n: int, cache_axes: Optional[CacheAxes] = None) -> Cache:
    """Each row repeated ``n`` times in place: [a, b] -> [a, a, b, b] (batch-major, beam-minor)."""
    if n == 1:
        return cache
    return map_batch_axis(lambda x, ax: jnp.repeat(x, n, axis=ax), cache, cache_axes)


def select_rows(mask: Array, new: Cache, old: Cache, cache_axes: Optional[CacheAxes] = None) -> Cache:
    """Rows of ``new`` where ``mask`` [N] is true, rows of ``old`` elsewhere; batch-less leaves from ``new``."""
    leaves_new, treedef, axes = _with_axes(new, cache_axes)
    leaves_old = treedef.flatten_up_to(old)
    out = []
    for x, y, ax in zip(leaves_new, leaves_old, axes):
        if ax < 0:
            out.append(x)
            continue
        shape = [1] * x.ndim
        shape[ax] = mask.shape[0]
        out.append(jnp.where(mask.reshape(shape), x, y))
    return treedef.unflatten(out)


def infer_batch_axes(abstract_cache: Callable[[int], Cache]) -> CacheAxes:
    """Batch axes found by comparing the cache's shapes at batch size 1 and 2 (abstractly, no compute).

    ``abstract_cache(n)`` returns the cache (or its ``jax.ShapeDtypeStruct`` s) for batch size ``n``.
    """
    one, two = abstract_cache(1), abstract_cache(2)

    def axis(a, b):
        diff = [i for i, (p, q) in enumerate(zip(a.shape, b.shape)) if p != q]
        return diff[0] if diff else -1

    return jax.tree_util.tree_map(axis, one, two)
