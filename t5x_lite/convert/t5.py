"""Hugging Face T5 (v1.0, v1.1, mT5, UL2) <-> t5x_lite parameters.

HF Linear weights are [out, in]; our kernels are [in, ...out] with heads split
out ([embed, heads, kv] and [heads, kv, embed]). The relative-position table
lives in HF's first block of each stack and at stack level here.

Two traps handled here: transformers 5 reports ``tie_word_embeddings=True`` for
every T5 config it builds (its v1.1 configs still tie unless the checkpoint has
a distinct ``lm_head``), and an untied HF head is initialised N(0, 1). We trust
the config.json on disk: ``tie_word_embeddings: false`` means an untied head.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from t5x_lite.models.config import T5Config

FEED_FORWARD_TO_ACTIVATIONS = {
    "relu": ("relu",),
    "gelu": ("gelu_exact",),
    "gated-gelu": ("gelu", "linear"),
    "gated-silu": ("silu", "linear"),
    "gated-relu": ("relu", "linear"),
}
ACTIVATIONS_TO_FEED_FORWARD = {v: k for k, v in FEED_FORWARD_TO_ACTIVATIONS.items()}


class ConversionError(ValueError):
    """A checkpoint that does not fit the model; the message names the key."""


def t5_config_from_hf(hf: Mapping, source: str = "config.json") -> T5Config:
    """HF T5 ``config.json`` dict -> T5Config; errors name ``source`` and the key at fault."""
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in FEED_FORWARD_TO_ACTIVATIONS:
        raise ConversionError(
            f"{source}: feed_forward_proj={proj!r} is not supported; "
            f"expected one of {sorted(FEED_FORWARD_TO_ACTIVATIONS)}"
        )

    def field(key, kind=int, default=None):
        # HF writes null for several optional ids: null means the default, as in transformers.
        value = hf.get(key)
        if value is None:
            if default is None:
                raise ConversionError(f"{source}: missing key {key!r}")
            return default
        value = _first(value) if key == "eos_token_id" else value
        try:
            converted = None if isinstance(value, (bool, str)) else kind(value)
        except (TypeError, ValueError):
            converted = None
        if converted is None or (kind is int and converted != value):  # 7.5 is no layer count
            raise ConversionError(f"{source}: {key}={value!r} is not {'an integer' if kind is int else 'a number'}")
        return converted

    tied = hf.get("tie_word_embeddings")
    if tied is not None and not isinstance(tied, bool):  # bool("false") is True
        raise ConversionError(f"{source}: tie_word_embeddings={tied!r} is not true, false or null")
    num_layers = field("num_layers")
    settings = dict(
        vocab_size=field("vocab_size"),
        d_model=field("d_model"),
        d_ff=field("d_ff"),
        num_heads=field("num_heads"),
        d_kv=field("d_kv"),
        num_encoder_layers=num_layers,
        num_decoder_layers=field("num_decoder_layers", default=num_layers),
        mlp_activations=FEED_FORWARD_TO_ACTIVATIONS[proj],
        logits_via_embedding=tied is not False,  # null is transformers' default, True
        dropout_rate=field("dropout_rate", float, 0.1),
        relative_attention_num_buckets=field("relative_attention_num_buckets", default=32),
        relative_attention_max_distance=field("relative_attention_max_distance", default=128),
        layer_norm_epsilon=field("layer_norm_epsilon", float, 1e-6),
        pad_id=field("pad_token_id", default=0),
        eos_id=field("eos_token_id", default=1),
        decoder_start_id=field("decoder_start_token_id", default=0),
    )
    try:
        return T5Config(**settings)
    except (TypeError, ValueError) as e:  # T5Config's own checks (e.g. a zero size)
        raise ConversionError(f"{source}: {e}") from e


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) else x


def t5_config_to_hf(cfg: T5Config) -> dict:
    if cfg.mlp_activations not in ACTIVATIONS_TO_FEED_FORWARD:
        raise ConversionError(f"mlp_activations={cfg.mlp_activations} has no Hugging Face feed_forward_proj")
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "is_encoder_decoder": True,
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_ff": cfg.d_ff,
        "d_kv": cfg.d_kv,
        "num_heads": cfg.num_heads,
        "num_layers": cfg.num_encoder_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "feed_forward_proj": ACTIVATIONS_TO_FEED_FORWARD[cfg.mlp_activations],
        "tie_word_embeddings": cfg.logits_via_embedding,
        "dropout_rate": cfg.dropout_rate,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "pad_token_id": cfg.pad_id,
        "eos_token_id": cfg.eos_id,
        "decoder_start_token_id": cfg.decoder_start_id,
        "use_cache": True,
    }


class _Reader:
    """Pops tensors by HF name so leftovers can be reported as unexpected keys."""

    def __init__(self, state: Mapping[str, np.ndarray], source: str):
        self.state = dict(state)
        self.source = source

    def take(self, key: str, shape: tuple) -> np.ndarray:
        if key not in self.state:
            raise ConversionError(f"{self.source}: missing tensor {key!r}")
        x = np.asarray(self.state.pop(key), dtype=np.float32)
        if x.shape != tuple(shape):
            raise ConversionError(f"{self.source}: tensor {key!r} has shape {x.shape}, config implies {tuple(shape)}")
        return x


def _attn_from_hf(r: _Reader, prefix: str, cfg: T5Config) -> dict:
    d, h, k = cfg.d_model, cfg.num_heads, cfg.d_kv
    inner = h * k
    qkv = {
        name: r.take(f"{prefix}.{hf}.weight", (inner, d)).T.reshape(d, h, k)
        for name, hf in (("query", "q"), ("key", "k"), ("value", "v"))
    }
    out = r.take(f"{prefix}.o.weight", (d, inner)).T.reshape(h, k, d)
    return {**{n: {"kernel": w} for n, w in qkv.items()}, "out": {"kernel": out}}


def _attn_to_hf(p: Mapping, prefix: str, cfg: T5Config) -> dict:
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    out = {f"{prefix}.{hf}.weight": np.asarray(p[name]["kernel"]).reshape(d, inner).T for name, hf in
           (("query", "q"), ("key", "k"), ("value", "v"))}
    out[f"{prefix}.o.weight"] = np.asarray(p["out"]["kernel"]).reshape(inner, d).T
    return out


def _mlp_names(cfg: T5Config) -> list[tuple[str, str]]:
    if len(cfg.mlp_activations) == 1:
        return [("wi", "wi")]
    return [(f"wi_{i}", f"wi_{i}") for i in range(len(cfg.mlp_activations))]


def _mlp_from_hf(r: _Reader, prefix: str, cfg: T5Config) -> dict:
    p = {ours: {"kernel": r.take(f"{prefix}.{hf}.weight", (cfg.d_ff, cfg.d_model)).T} for ours, hf in _mlp_names(cfg)}
    p["wo"] = {"kernel": r.take(f"{prefix}.wo.weight", (cfg.d_model, cfg.d_ff)).T}
    return p


def _mlp_to_hf(p: Mapping, prefix: str, cfg: T5Config) -> dict:
    out = {f"{prefix}.{hf}.weight": np.asarray(p[ours]["kernel"]).T for ours, hf in _mlp_names(cfg)}
    out[f"{prefix}.wo.weight"] = np.asarray(p["wo"]["kernel"]).T
    return out


def _norm(r: _Reader, key: str, cfg: T5Config) -> dict:
    return {"scale": r.take(key, (cfg.d_model,))}


def t5_params_from_hf(state: Mapping[str, np.ndarray], cfg: T5Config, source: str = "checkpoint") -> dict:
    """HF ``T5ForConditionalGeneration`` state dict -> t5x_lite params (loop layout)."""
    r = _Reader(state, source)
    d = cfg.d_model
    shared = r.take("shared.weight", (cfg.vocab_size, d))
    buckets, heads = cfg.relative_attention_num_buckets, cfg.num_heads
    enc: dict = {
        "relpos_bias": {
            "rel_embedding": r.take("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                                    (buckets, heads)).T
        },
        "encoder_norm": _norm(r, "encoder.final_layer_norm.weight", cfg),
    }
    for i in range(cfg.num_encoder_layers):
        b = f"encoder.block.{i}"
        enc[f"layers_{i}"] = {
            "pre_attention_layer_norm": _norm(r, f"{b}.layer.0.layer_norm.weight", cfg),
            "attention": _attn_from_hf(r, f"{b}.layer.0.SelfAttention", cfg),
            "pre_mlp_layer_norm": _norm(r, f"{b}.layer.1.layer_norm.weight", cfg),
            "mlp": _mlp_from_hf(r, f"{b}.layer.1.DenseReluDense", cfg),
        }
    dec: dict = {
        "relpos_bias": {
            "rel_embedding": r.take("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                                    (buckets, heads)).T
        },
        "decoder_norm": _norm(r, "decoder.final_layer_norm.weight", cfg),
    }
    for i in range(cfg.num_decoder_layers):
        b = f"decoder.block.{i}"
        dec[f"layers_{i}"] = {
            "pre_self_attention_layer_norm": _norm(r, f"{b}.layer.0.layer_norm.weight", cfg),
            "self_attention": _attn_from_hf(r, f"{b}.layer.0.SelfAttention", cfg),
            "pre_cross_attention_layer_norm": _norm(r, f"{b}.layer.1.layer_norm.weight", cfg),
            "encoder_decoder_attention": _attn_from_hf(r, f"{b}.layer.1.EncDecAttention", cfg),
            "pre_mlp_layer_norm": _norm(r, f"{b}.layer.2.layer_norm.weight", cfg),
            "mlp": _mlp_from_hf(r, f"{b}.layer.2.DenseReluDense", cfg),
        }
    lm_head = r.state.pop("lm_head.weight", None)
    if cfg.logits_via_embedding:
        if lm_head is not None and not np.array_equal(np.asarray(lm_head, np.float32), shared):
            raise ConversionError(
                f"{source}: config says tie_word_embeddings=true but lm_head.weight differs from shared.weight; "
                "set tie_word_embeddings=false in config.json if the head is untied (T5 1.1 / mT5)"
            )
    else:
        if lm_head is None:
            raise ConversionError(f"{source}: tie_word_embeddings=false but the checkpoint has no lm_head.weight")
        r.state["lm_head.weight"] = lm_head
        dec["logits_dense"] = {"kernel": r.take("lm_head.weight", (cfg.vocab_size, d)).T}
    # Tied copies of the shared table and HF's unused cross-attention bias slot are expected leftovers.
    for key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"):
        r.state.pop(key, None)
    if r.state:
        raise ConversionError(f"{source}: unexpected tensors {sorted(r.state)[:8]}")
    return {"token_embedder": {"embedding": shared}, "encoder": enc, "decoder": dec}


def t5_params_to_hf(params: Mapping, cfg: T5Config) -> dict[str, np.ndarray]:
    """t5x_lite params (loop layout) -> HF ``T5ForConditionalGeneration`` state dict."""
    enc, dec = params["encoder"], params["decoder"]
    out = {"shared.weight": np.asarray(params["token_embedder"]["embedding"])}
    out["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = np.asarray(
        enc["relpos_bias"]["rel_embedding"]).T
    out["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = np.asarray(
        dec["relpos_bias"]["rel_embedding"]).T
    out["encoder.final_layer_norm.weight"] = np.asarray(enc["encoder_norm"]["scale"])
    out["decoder.final_layer_norm.weight"] = np.asarray(dec["decoder_norm"]["scale"])
    for i in range(cfg.num_encoder_layers):
        p, b = enc[f"layers_{i}"], f"encoder.block.{i}"
        out[f"{b}.layer.0.layer_norm.weight"] = np.asarray(p["pre_attention_layer_norm"]["scale"])
        out.update(_attn_to_hf(p["attention"], f"{b}.layer.0.SelfAttention", cfg))
        out[f"{b}.layer.1.layer_norm.weight"] = np.asarray(p["pre_mlp_layer_norm"]["scale"])
        out.update(_mlp_to_hf(p["mlp"], f"{b}.layer.1.DenseReluDense", cfg))
    for i in range(cfg.num_decoder_layers):
        p, b = dec[f"layers_{i}"], f"decoder.block.{i}"
        out[f"{b}.layer.0.layer_norm.weight"] = np.asarray(p["pre_self_attention_layer_norm"]["scale"])
        out.update(_attn_to_hf(p["self_attention"], f"{b}.layer.0.SelfAttention", cfg))
        out[f"{b}.layer.1.layer_norm.weight"] = np.asarray(p["pre_cross_attention_layer_norm"]["scale"])
        out.update(_attn_to_hf(p["encoder_decoder_attention"], f"{b}.layer.1.EncDecAttention", cfg))
        out[f"{b}.layer.2.layer_norm.weight"] = np.asarray(p["pre_mlp_layer_norm"]["scale"])
        out.update(_mlp_to_hf(p["mlp"], f"{b}.layer.2.DenseReluDense", cfg))
    if not cfg.logits_via_embedding:
        out["lm_head.weight"] = np.asarray(dec["logits_dense"]["kernel"]).T
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
