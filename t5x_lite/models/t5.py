"""T5 encoder-decoder (v1.0, v1.1, mT5, UL2-style: one network, config variants).

Feature names follow t5x: ``encoder_input_tokens``, ``decoder_input_tokens``,
``encoder_segment_ids`` / ``decoder_segment_ids`` and ``*_positions`` for packed
rows. The attention scale is folded into the query initializer (T5 never scales
q.k), and one relative-position-bias table is shared by all layers of a stack.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.models import layers as L
from t5x_lite.models.config import T5Config
from t5x_lite.models.stacking import run_layers

Array = jax.Array


def _dropout_dims(cfg: T5Config) -> tuple[int, ...]:
    """The axes one dropout mask is shared along: with ``broadcast_dropout``, the second-last, which is the
    length of [B, L, features] hidden states and the queries of [B, heads, Q, K] attention probabilities."""
    return (-2,) if cfg.broadcast_dropout else ()


def _init(scale: float = 1.0):
    return nn.initializers.variance_scaling(scale, "fan_in", "normal")


def _attention(cfg: T5Config, name: str) -> L.MultiHeadAttention:
    return L.MultiHeadAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.d_kv,
        scale=1.0,
        dropout_rate=cfg.dropout_rate,  # on the attention probabilities, as HF's T5Attention (t5x drops them too)
        dropout_broadcast_dims=_dropout_dims(cfg),
        implementation=cfg.attention_impl,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        # Mesh TensorFlow folds 1/sqrt(d_kv) into the query init instead of scaling q.k.
        query_init=_init(1.0 / cfg.d_kv),
        qkv_init=_init(),
        out_init=_init(),
        name=name,
    )


def _mlp(cfg: T5Config) -> L.MlpBlock:
    return L.MlpBlock(
        intermediate_dim=cfg.d_ff,
        activations=cfg.mlp_activations,
        intermediate_dropout_rate=cfg.dropout_rate,
        dropout_broadcast_dims=_dropout_dims(cfg),
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=_init(),
        name="mlp",
    )


def _norm(cfg: T5Config, name: str) -> L.RMSNorm:
    return L.RMSNorm(
        epsilon=cfg.layer_norm_epsilon,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        name=name,
    )


def _relpos_bias(cfg: T5Config, bidirectional: bool) -> L.RelativePositionBias:
    return L.RelativePositionBias(
        cfg.relative_attention_num_buckets,
        cfg.relative_attention_max_distance,
        cfg.num_heads,
        bidirectional=bidirectional,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        name="relpos_bias",
    )


def _dropout(cfg: T5Config, x: Array, deterministic: bool) -> Array:
    return nn.Dropout(cfg.dropout_rate, broadcast_dims=_dropout_dims(cfg))(x, deterministic=deterministic)


class EncoderLayer(nn.Module):
    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: Array, bias: Array, mask: Array):
        cfg, det = self.config, self.deterministic
        x = L.constrain(x, ("batch", "length", "embed"))
        y = _norm(cfg, "pre_attention_layer_norm")(x)
        y = _attention(cfg, "attention")(y, y, bias=bias, mask=mask, deterministic=det)
        x = x + _dropout(cfg, y, det)
        y = _norm(cfg, "pre_mlp_layer_norm")(x)
        y = _mlp(cfg)(y, deterministic=det)
        x = x + _dropout(cfg, y, det)
        return L.constrain(x, ("batch", "length", "embed")), None


class DecoderLayer(nn.Module):
    """Causal self-attention, then (encoder-decoder only) cross-attention, then the MLP."""

    config: T5Config
    cross_attention: bool = True
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, x: Array, bias: Array, mask: Array, encoded: Optional[Array], cross_mask: Optional[Array]):
        cfg, det = self.config, self.deterministic
        x = L.constrain(x, ("batch", "length", "embed"))
        y = _norm(cfg, "pre_self_attention_layer_norm")(x)
        y = _attention(cfg, "self_attention")(y, y, bias=bias, mask=mask, deterministic=det, decode=self.decode)
        x = x + _dropout(cfg, y, det)
        if self.cross_attention:
            y = _norm(cfg, "pre_cross_attention_layer_norm")(x)
            y = _attention(cfg, "encoder_decoder_attention")(y, encoded, mask=cross_mask, deterministic=det)
            x = x + _dropout(cfg, y, det)
        y = _norm(cfg, "pre_mlp_layer_norm")(x)
        y = _mlp(cfg)(y, deterministic=det)
        x = x + _dropout(cfg, y, det)
        return L.constrain(x, ("batch", "length", "embed")), None


def _positions(tokens: Array, positions: Optional[Array]) -> Array:
    if positions is not None:
        return positions
    return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


def _segments(tokens: Array, segment_ids: Optional[Array], pad_id: int) -> Array:
    """Unpacked inputs: one segment, padding (pad_id) as segment 0."""
    if segment_ids is not None:
        return segment_ids
    return (tokens != pad_id).astype(jnp.int32)


class Encoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, tokens: Array, segment_ids=None, positions=None, *, deterministic: bool = True) -> Array:
        """``positions`` is accepted for packed batches and not needed: see ``layers.RelativePositionBias``."""
        del positions
        cfg = self.config
        segments = _segments(tokens, segment_ids, cfg.pad_id)
        x = self.shared_embedding(tokens.astype(jnp.int32))
        x = _dropout(cfg, x, deterministic)
        bias = _relpos_bias(cfg, bidirectional=True)(tokens.shape[1], tokens.shape[1])
        mask = L.segment_mask(segments, segments)
        x = run_layers(
            EncoderLayer,
            cfg.num_encoder_layers,
            scan=cfg.scan_layers,
            remat_policy=cfg.remat_policy,
            layer_kwargs=dict(config=cfg, deterministic=deterministic),
            carry=x,
            broadcast_args=(bias, mask),
        )
        x = _norm(cfg, "encoder_norm")(x)
        return _dropout(cfg, x, deterministic)


class Decoder(nn.Module):
    """Decoder stack; with ``cross_attention=False`` it is the decoder-only LM's trunk.

    Masks: causal from positions, restricted to the same packed segment; a
    prefix-LM row (``causal_attention`` = 1 on its inputs) also sees its whole
    prefix bidirectionally. With ``decode=True`` the stack keeps its own position
    counter in the ``cache`` collection, beside each layer's keys and values.
    """

    config: T5Config
    shared_embedding: nn.Module
    cross_attention: bool = True

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        encoded: Optional[Array] = None,
        *,
        segment_ids: Optional[Array] = None,
        positions: Optional[Array] = None,
        cross_mask: Optional[Array] = None,
        causal_attention: Optional[Array] = None,
        deterministic: bool = True,
        decode: bool = False,
        max_decode_length: Optional[int] = None,
    ) -> Array:
        cfg = self.config
        bidirectional_bias = (not self.cross_attention) and cfg.decoder_only_bidirectional_bias
        relpos = _relpos_bias(cfg, bidirectional=bidirectional_bias)
        x = self.shared_embedding(tokens.astype(jnp.int32))
        x = _dropout(cfg, x, deterministic)

        if decode and self.has_variable("cache", "decode_position"):
            if max_decode_length is None:
                raise ValueError("decode=True after cache initialization needs max_decode_length")
            pos_var = self.variable("cache", "decode_position", lambda: jnp.array(0, jnp.int32))
            start = pos_var.value
            q_pos, k_pos = L.cache_positions(start, tokens.shape[1], max_decode_length)
            pos_var.value = start + tokens.shape[1]
            bias = relpos(tokens.shape[1], max_decode_length, query_offset=start)
            visible = k_pos[None, :] <= q_pos[:, None]
            if causal_attention is not None:
                # Prefilling a prompt: its tokens see the whole prompt.
                prompt_end = start + jnp.sum(causal_attention, axis=1)  # [B]
                in_prompt = k_pos[None, None, :] < prompt_end[:, None, None]
                visible = visible[None] | (in_prompt & (causal_attention[:, :, None] > 0))
                mask = visible[:, None]
            else:
                mask = visible[None, None]
        else:
            if decode:  # shape-defining call that allocates the cache
                self.variable("cache", "decode_position", lambda: jnp.array(0, jnp.int32))
            positions = _positions(tokens, positions)
            bias = relpos(tokens.shape[1], tokens.shape[1])
            mask = L.causal_mask(positions, positions)
            if causal_attention is not None:
                prefix = causal_attention > 0
                mask = mask | L.make_attention_mask(prefix, prefix)
            if segment_ids is not None:
                mask = mask & L.segment_mask(segment_ids, segment_ids)

        x = run_layers(
            DecoderLayer,
            cfg.num_decoder_layers,
            scan=cfg.scan_layers,
            remat_policy=cfg.remat_policy,
            layer_kwargs=dict(
                config=cfg, cross_attention=self.cross_attention, deterministic=deterministic, decode=decode
            ),
            carry=x,
            broadcast_args=(bias, mask, encoded, cross_mask),
        )
        x = _norm(cfg, "decoder_norm")(x)
        x = _dropout(cfg, x, deterministic)
        logits_dtype = jnp.float32 if cfg.float32_logits else jnp.dtype(cfg.dtype)
        x = x.astype(logits_dtype)
        if cfg.logits_via_embedding:
            # Tied head (T5 1.0): rescale so logits have unit-ish variance.
            logits = self.shared_embedding.attend(x * (cfg.d_model**-0.5), dtype=logits_dtype)
        else:
            logits = L.DenseGeneral(
                cfg.vocab_size,
                kernel_axes=("embed", "vocab"),
                dtype=logits_dtype,
                param_dtype=jnp.dtype(cfg.param_dtype),
                kernel_init=_init(),
                name="logits_dense",
            )(x)
        return L.constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


def shared_embedder(cfg: T5Config) -> L.Embed:
    """The token table shared by encoder input, decoder input and (T5 1.0) the output head."""
    return L.Embed(
        num_embeddings=cfg.vocab_size,
        features=cfg.d_model,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
    )


class T5(nn.Module):
    """Encoder-decoder transformer. ``__call__`` returns float32 logits [B, T_dec, vocab]."""

    config: T5Config

    def setup(self):
        self.token_embedder = shared_embedder(self.config)
        self.encoder = Encoder(self.config, self.token_embedder)
        self.decoder = Decoder(self.config, self.token_embedder)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None, *, enable_dropout=False):
        return self.encoder(
            encoder_input_tokens, encoder_segment_ids, encoder_positions, deterministic=not enable_dropout
        )

    def decode(
        self,
        encoded: Array,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        decoder_positions=None,
        *,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: Optional[int] = None,
    ) -> Array:
        cfg = self.config
        enc_segments = _segments(encoder_input_tokens, encoder_segment_ids, cfg.pad_id)
        if decoder_segment_ids is not None and not decode:
            cross_mask = L.segment_mask(decoder_segment_ids, enc_segments)
        else:
            cross_mask = (enc_segments != 0)[:, None, None, :]
        return self.decoder(
            decoder_input_tokens,
            encoded,
            segment_ids=None if decode else decoder_segment_ids,
            positions=decoder_positions,
            cross_mask=cross_mask,
            deterministic=not enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        encoder_positions=None,
        decoder_positions=None,
        *,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: Optional[int] = None,
    ) -> Array:
        encoded = self.encode(
            encoder_input_tokens, encoder_segment_ids, encoder_positions, enable_dropout=enable_dropout
        )
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            encoder_segment_ids,
            decoder_segment_ids,
            decoder_positions,
            enable_dropout=enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )
