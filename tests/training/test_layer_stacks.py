"""The optimizers update a layer loop's weights stacked per weight; that must not change a single number."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5x_lite.training import layer_stacks
from t5x_lite.training import optimizers as O
from tests.training.test_optimizers import _update


def _layer(rng, scale):
    """One layer's weights, with both dims >= 128 where Adafactor factors; ``scale`` differs per layer
    so that per-layer RMS statistics differ from whole-stack ones."""
    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)

    return {"attention": {"query": {"kernel": normal(128, 4, 32)}, "out": {"kernel": normal(4, 32, 128)}},
            "mlp": {"wi": {"kernel": normal(128, 256)}},
            "pre_attention_layer_norm": {"scale": normal(128)}}


def _params(rng, scales):
    return {"encoder": {**{f"layers_{i}": _layer(rng, s) for i, s in enumerate(scales)},
                        "encoder_norm": {"scale": jnp.asarray(rng.normal(size=128), jnp.float32)}},
            "decoder": {f"layers_{i}": _layer(rng, s) for i, s in enumerate(scales[:2])},
            "token_embedder": {"embedding": jnp.asarray(rng.normal(size=(300, 128)), jnp.float32)}}


@pytest.mark.parametrize("name", sorted(O.OPTIMIZERS))
def test_stacked_update_equals_the_per_layer_one(name):
    rng = np.random.default_rng(0)
    params = _params(rng, [1.0, 1e-2, 3.0])
    grads_seq = [_params(rng, [s, 1.0, 1e-3]) for s in (1.0, 1e-2, 5.0)]
    kwargs = dict(learning_rate=0.05, weight_decay=0.01, grad_clip_norm=1.0)
    got_updates, got_state = _update(O.make_optimizer(name, stack_layers=True, **kwargs), grads_seq, params)
    want_updates, want_state = _update(O.make_optimizer(name, stack_layers=False, **kwargs), grads_seq, params)
    # The state keeps the params' own (loop) layout: checkpoints do not change.
    assert jax.tree_util.tree_structure(got_state) == jax.tree_util.tree_structure(want_state)
    for got, want in ((got_updates, want_updates), (got_state, want_state)):
        for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want)):
            assert g.shape == w.shape, jax.tree_util.keystr(path)
            # Float32 rounding only: sums over a stack are taken in another order (the global norm too).
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * float(np.abs(w).max()),
                                       err_msg=jax.tree_util.keystr(path))


def test_params_without_a_layer_loop_go_straight_to_the_optimizer():
    params = {"layers": {"w": jnp.ones((2, 3))}, "b": jnp.ones(3)}  # already stacked (scan layout)
    calls = []

    def update(updates, state, params=None):
        calls.append(updates)
        return updates, state

    tx = layer_stacks.on_stacked_layers(optax.GradientTransformation(lambda p: (), update))
    tx.update(params, tx.init(params), params)
    assert calls == [params]


def test_an_optimizer_whose_state_cannot_be_stacked_is_a_clear_error():
    # A state slot whose size is not per layer (here: one more than the leaf's) has no per-layer view.
    def per_leaf_init(params):
        return {"flat": jax.tree.map(lambda x: jnp.zeros((x.size + 1,)), params)}

    tx = layer_stacks.on_stacked_layers(
        optax.GradientTransformation(per_leaf_init, lambda u, s, p=None: (u, s)))
    params = {"layers_0": {"w": jnp.ones((2, 3))}, "layers_1": {"w": jnp.ones((2, 3))}}
    with pytest.raises(ValueError, match=r"\['flat'\]\['layers'\]\['w'\].*cannot run on stacked layers"):
        tx.update(params, tx.init(params), params)
