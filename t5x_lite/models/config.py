"""Frozen architecture configs. A gin size file overrides only these fields."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional, Tuple

import jax.numpy as jnp

from t5x_lite.errors import ConfigError

REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn", "einsum")


_KINDS = {"int": numbers.Integral, "float": numbers.Real, "bool": bool, "str": str}


def _check_common(cfg) -> None:
    # Gin passes whatever a file or flag says; a string d_model would fail much later, deep in flax.
    for field in dataclasses.fields(cfg):
        kind, value = _KINDS.get(field.type), getattr(cfg, field.name)
        if kind is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
            raise ConfigError(f"{type(cfg).__name__}.{field.name} must be {field.type}, got {value!r}")
    if cfg.remat_policy not in REMAT_POLICIES:
        raise ConfigError(f"remat_policy must be one of {REMAT_POLICIES}, got {cfg.remat_policy!r}")
    if cfg.attention_impl not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(f"attention_impl must be one of {ATTENTION_IMPLEMENTATIONS}, got {cfg.attention_impl!r}")
    for name in ("dtype", "param_dtype"):
        try:
            jnp.dtype(getattr(cfg, name))
        except TypeError as e:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not a dtype name") from e


@dataclasses.dataclass(frozen=True)
class T5Config:
    """T5-family encoder-decoder (and the decoder-only LM built from the same blocks).

    T5 1.0: ``mlp_activations=('relu',)``, ``logits_via_embedding=True`` (tied head,
    decoder output scaled by d_model**-0.5). T5 1.1 / mT5 / UL2: gated-GELU
    ``('gelu', 'linear')`` and an untied head.
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_ff: int = 2048
    num_heads: int = 8
    d_kv: int = 64
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    mlp_activations: Tuple[str, ...] = ("relu",)
    logits_via_embedding: bool = True
    # The output projection in float32 whatever dtype says, as t5x computes it ("for logit training
    # stability": its network's tied attend_dtype and untied logits_dense, and flaxformer's T5 configs); False
    # keeps it in dtype, as Hugging Face does. Matters only for a bfloat16 dtype.
    float32_logits: bool = True
    dropout_rate: float = 0.1
    # t5x's dropout (flaxformer's T5 configs): one mask per example shared along the sequence, over the
    # hidden states' length axis and the attention probabilities' query axis. False draws every element
    # independently, as Hugging Face does.
    broadcast_dropout: bool = False
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    # Decoder-only prefix LM: let the bias table see direction inside the prefix.
    decoder_only_bidirectional_bias: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat_policy: str = "none"
    attention_impl: str = "xla"
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0

    def __post_init__(self):
        _check_common(self)
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))

    def replace(self, **kw) -> "T5Config":
        return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT-style encoder: learned absolute positions, token types, post-LN, GELU."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu_exact"
    # The MLM and classification heads' output projections in float32 whatever dtype says (see T5Config).
    float32_logits: bool = True
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-12
    num_labels: int = 2
    # Dropout before the classification head; None means dropout_rate (HF classifier_dropout).
    classifier_dropout_rate: Optional[float] = None
    pad_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat_policy: str = "none"
    attention_impl: str = "xla"
    initializer_range: float = 0.02
    # The classes' names in id order (HF id2label), kept for export; None: HF's LABEL_0, LABEL_1, ...
    label_names: Optional[tuple[str, ...]] = None

    def __post_init__(self):
        _check_common(self)
        if isinstance(self.label_names, list):  # from gin; a tuple keeps the config hashable
            object.__setattr__(self, "label_names", tuple(self.label_names))
        if self.label_names is not None and (
                not isinstance(self.label_names, tuple) or len(self.label_names) != self.num_labels
                or not all(isinstance(n, str) and n for n in self.label_names)
                or len(set(self.label_names)) != len(self.label_names)):
            raise ConfigError(f"BertConfig.label_names must be {self.num_labels} (num_labels) distinct non-empty "
                              f"strings, got {self.label_names!r} (with other classes, set label_names = None)")
        for name in ("vocab_size", "hidden_size", "num_heads", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"BertConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_labels < 1:
            raise ConfigError(f"BertConfig.num_labels must be >= 1, got {self.num_labels}")
        if self.classifier_dropout_rate is not None and (
                isinstance(self.classifier_dropout_rate, bool) or not isinstance(self.classifier_dropout_rate,
                                                                                 (int, float))):
            raise ConfigError(f"BertConfig.classifier_dropout_rate must be a float or None, got "
                              f"{self.classifier_dropout_rate!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **kw) -> "BertConfig":
        return dataclasses.replace(self, **kw)


def dtype_of(name: Optional[str]) -> jnp.dtype:
    return jnp.dtype(name)
