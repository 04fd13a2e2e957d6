"""BERT encoder with MLM and sequence-classification heads (Hugging Face ``Bert*`` numerics).

Post-LN layers with biased projections, learned absolute positions and token
types. Features: ``input_tokens``, ``token_type_ids``, ``segment_ids`` and
``positions``; packed rows give ``segment_ids`` (0 = padding) and per-example
``positions``, and tokens then attend only within their own segment.

Parameter tree (loop layout; ``scan_layers`` stacks ``layers_{i}`` into ``layers``)::

    bert/  word_embeddings, token_type_embeddings, position_embeddings, embeddings_layer_norm,
           layers_{i}/{attention/{query,key,value,out}, attention_layer_norm, mlp/{wi,wo}, mlp_layer_norm},
           pooler                          (BertForClassification; BertModel unless pooler=False)
    mlm_dense, mlm_layer_norm, mlm_bias    (BertForMLM; the decoder is the word-embedding table)
    classifier                             (BertForClassification)

``BertEncoder`` on its own takes the ``bert`` subtree as its params.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.models import layers as L
from t5x_lite.models.config import BertConfig
from t5x_lite.models.stacking import run_layers

Array = jax.Array


def _dtypes(cfg: BertConfig) -> dict:
    return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


def _init(cfg: BertConfig):
    # HF BERT initializes every matrix and table from N(0, initializer_range).
    return nn.initializers.normal(stddev=cfg.initializer_range)


def _dense(cfg: BertConfig, features: int, kernel_axes: tuple, name: str, dtype=None) -> L.DenseGeneral:
    dtypes = _dtypes(cfg) if dtype is None else dict(_dtypes(cfg), dtype=dtype)
    return L.DenseGeneral(features, kernel_axes=kernel_axes, use_bias=True, kernel_init=_init(cfg), name=name, **dtypes)


def _logits_dtype(cfg: BertConfig):
    return jnp.float32 if cfg.float32_logits else jnp.dtype(cfg.dtype)


def _norm(cfg: BertConfig, name: str) -> L.LayerNorm:
    return L.LayerNorm(epsilon=cfg.layer_norm_epsilon, name=name, **_dtypes(cfg))


def _embed(cfg: BertConfig, num: int, axes: tuple, name: Optional[str] = None) -> L.Embed:
    return L.Embed(num, cfg.hidden_size, embedding_init=_init(cfg), axes=axes, name=name, **_dtypes(cfg))


def _dropout(rate: float, x: Array, deterministic: bool) -> Array:
    return nn.Dropout(rate)(x, deterministic=deterministic)


class BertLayer(nn.Module):
    """Post-LN block: LN(x + attn(x)), then LN(x + mlp(x)); dropout on each branch."""

    config: BertConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: Array, mask: Array):
        cfg, det = self.config, self.deterministic
        x = L.constrain(x, ("batch", "length", "embed"))
        y = L.MultiHeadAttention(
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            use_bias=True,
            scale=None,  # 1/sqrt(head_dim), as in BERT
            dropout_rate=cfg.attention_dropout_rate,
            implementation=cfg.attention_impl,
            qkv_init=_init(cfg),
            out_init=_init(cfg),
            name="attention",
            **_dtypes(cfg),
        )(x, x, mask=mask, deterministic=det)
        x = _norm(cfg, "attention_layer_norm")(x + _dropout(cfg.dropout_rate, y, det))
        y = L.MlpBlock(
            intermediate_dim=cfg.intermediate_size,
            activations=(cfg.hidden_act,),
            use_bias=True,
            kernel_init=_init(cfg),
            name="mlp",
            **_dtypes(cfg),
        )(x, deterministic=det)
        x = _norm(cfg, "mlp_layer_norm")(x + _dropout(cfg.dropout_rate, y, det))
        return L.constrain(x, ("batch", "length", "embed")), None


def _attention_mask(tokens: Array, segment_ids, attention_mask, pad_id: int) -> Array:
    if segment_ids is not None:
        return L.segment_mask(segment_ids, segment_ids)
    # Unpacked rows: mask only padding keys, like HF, so every position (padding
    # queries and a left-padded token 0 included) matches HF exactly.
    key_ok = (attention_mask > 0) if attention_mask is not None else (tokens != pad_id)
    return L.make_attention_mask(jnp.ones_like(key_ok), key_ok)


class BertEncoder(nn.Module):
    """Embeddings + layers (+ pooler). Returns ``(sequence [B, L, E], pooled [B, E] or None)``.

    The pooler reads token 0 of each row, so classification expects one example per row.
    A row, packed or not, may be at most ``max_position_embeddings`` long: one
    example in a packed row may fill it, and positions are not known while tracing.
    """

    config: BertConfig
    add_pooling_layer: bool = True

    def setup(self):
        # Defined in setup, not inline, so the MLM head can reuse the table via ``attend``.
        self.word_embeddings = _embed(self.config, self.config.vocab_size, ("vocab", "embed"))

    def attend(self, x: Array, dtype=None) -> Array:
        return self.word_embeddings.attend(x, dtype)

    @nn.compact
    def __call__(
        self,
        input_tokens: Array,
        token_type_ids: Optional[Array] = None,
        segment_ids: Optional[Array] = None,
        positions: Optional[Array] = None,
        attention_mask: Optional[Array] = None,
        *,
        enable_dropout: bool = False,
    ) -> tuple[Array, Optional[Array]]:
        cfg, det = self.config, not enable_dropout
        if cfg.hidden_act not in L.ACTIVATIONS:
            raise ValueError(f"hidden_act {cfg.hidden_act!r} is not one of {sorted(L.ACTIVATIONS)}")
        tokens = input_tokens.astype(jnp.int32)
        # Packed rows too: an example may fill its row, and jnp.take returns NaN rows for positions past the table.
        if tokens.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds max_position_embeddings {cfg.max_position_embeddings}"
            )
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(tokens)

        # Same summation order as HF: (word + token type) + position.
        x = self.word_embeddings(tokens)
        x = x + _embed(cfg, cfg.type_vocab_size, ("token_types", "embed"), "token_type_embeddings")(
            token_type_ids.astype(jnp.int32)
        )
        x = x + _embed(cfg, cfg.max_position_embeddings, ("abspos_buckets", "embed"), "position_embeddings")(
            positions.astype(jnp.int32)
        )
        x = _norm(cfg, "embeddings_layer_norm")(x)
        x = _dropout(cfg.dropout_rate, x, det)
        x = L.constrain(x, ("batch", "length", "embed"))

        mask = _attention_mask(tokens, segment_ids, attention_mask, cfg.pad_id)
        x = run_layers(
            BertLayer,
            cfg.num_layers,
            scan=cfg.scan_layers,
            remat_policy=cfg.remat_policy,
            layer_kwargs=dict(config=cfg, deterministic=det),
            carry=x,
            broadcast_args=(mask,),
        )
        pooled = None
        if self.add_pooling_layer:
            pooled = jnp.tanh(_dense(cfg, cfg.hidden_size, ("embed", "mlp"), "pooler")(x[:, 0]))
            pooled = L.constrain(pooled, ("batch", "embed"))
        return x, pooled


class BertForMLM(nn.Module):
    """Masked-LM head: dense + act + LN, tied decoder and a per-token bias. Float32 logits [B, L, vocab]."""

    config: BertConfig

    def setup(self):
        # HF BertForMaskedLM has no pooler; leaving it out keeps the param trees aligned.
        self.bert = BertEncoder(self.config, add_pooling_layer=False)

    @nn.compact
    def __call__(
        self,
        input_tokens: Array,
        token_type_ids: Optional[Array] = None,
        segment_ids: Optional[Array] = None,
        positions: Optional[Array] = None,
        attention_mask: Optional[Array] = None,
        *,
        enable_dropout: bool = False,
    ) -> Array:
        cfg = self.config
        x, _ = self.bert(
            input_tokens, token_type_ids, segment_ids, positions, attention_mask, enable_dropout=enable_dropout
        )
        h = _dense(cfg, cfg.hidden_size, ("embed", "mlp"), "mlm_dense")(x)
        h = _norm(cfg, "mlm_layer_norm")(L.ACTIVATIONS[cfg.hidden_act](h))
        bias = self.param(
            "mlm_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)), (cfg.vocab_size,),
            jnp.dtype(cfg.param_dtype),
        )
        logits = self.bert.attend(h, _logits_dtype(cfg)).astype(jnp.float32) + bias.astype(jnp.float32)
        return L.constrain(logits, ("batch", "length", "vocab"))


class BertForClassification(nn.Module):
    """Dropout + dense on the pooled output. Float32 logits [B, num_labels]."""

    config: BertConfig

    def setup(self):
        self.bert = BertEncoder(self.config, add_pooling_layer=True)

    @nn.compact
    def __call__(
        self,
        input_tokens: Array,
        token_type_ids: Optional[Array] = None,
        segment_ids: Optional[Array] = None,
        positions: Optional[Array] = None,
        attention_mask: Optional[Array] = None,
        *,
        enable_dropout: bool = False,
    ) -> Array:
        cfg = self.config
        _, pooled = self.bert(
            input_tokens, token_type_ids, segment_ids, positions, attention_mask, enable_dropout=enable_dropout
        )
        rate = cfg.dropout_rate if cfg.classifier_dropout_rate is None else cfg.classifier_dropout_rate
        pooled = _dropout(rate, pooled, not enable_dropout)
        logits = _dense(cfg, cfg.num_labels, ("embed", "classes"), "classifier", dtype=_logits_dtype(cfg))(pooled)
        return L.constrain(logits.astype(jnp.float32), ("batch", "classes"))


class BertModel(nn.Module):
    """The bare encoder under ``bert/`` (HF ``BertModel``, sentence-transformers): (sequence, pooled or None).

    ``pooler=False`` is HF's ``add_pooling_layer=False`` (checkpoints saved without one).
    """

    config: BertConfig
    pooler: bool = True

    def setup(self):
        self.bert = BertEncoder(self.config, add_pooling_layer=self.pooler)

    def __call__(self, input_tokens, token_type_ids=None, segment_ids=None, positions=None, attention_mask=None,
                 *, enable_dropout: bool = False):
        return self.bert(input_tokens, token_type_ids, segment_ids, positions, attention_mask,
                         enable_dropout=enable_dropout)
