"""Hugging Face BERT checkpoints <-> t5x_lite BERT params (loop layout, NumPy arrays).

Accepted key layouts: ``BertModel`` (no prefix; also what sentence-transformers
writes), ``bert.``-prefixed encoders with a ``cls.predictions.*`` MLM head
(``BertForMaskedLM`` / ``BertForPreTraining``) or a ``classifier.*`` head
(``BertForSequenceClassification``). The returned tree holds whatever the file
has (see ``t5x_lite.models.bert`` for the layout): apply it to ``BertForMLM`` or
``BertForClassification``, or ``params['bert']`` to ``BertEncoder``.

Layout: a torch ``Linear`` weight is ``[out, in]``; here kernels are ``[in..., out...]``
and attention projections split heads (``[embed, heads, kv]``, ``[heads, kv, embed]``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Union

import jax.numpy as jnp
import numpy as np

from t5x_lite.convert import hf_io
from t5x_lite.convert.t5 import ConversionError
from t5x_lite.models.config import BertConfig
from t5x_lite.models.stacking import unstack_layer_params

_ACT_FROM_HF = {
    "gelu": "gelu_exact",
    "gelu_python": "gelu_exact",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_ACT_TO_HF = {"gelu_exact": "gelu", "gelu": "gelu_new", "relu": "relu", "silu": "silu"}


# HF classes whose weights map onto ours (a next-sentence head is dropped with a warning).
ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForNextSentencePrediction",
                 "BertForSequenceClassification")


class BertConversionError(ConversionError):
    """A checkpoint or config that does not map onto the t5x_lite BERT; the message names the key and file."""


# ------------------------------------------------------------------------ config


def bert_config_from_hf(config_json: Mapping, *, source: str = "config.json", **overrides) -> BertConfig:
    """HF ``config.json`` dict -> BertConfig; ``overrides`` set runtime fields (dtype, scan_layers, ...)."""
    j = dict(config_json)
    if j.get("model_type", "bert") != "bert":
        raise BertConversionError(f"{source}: model_type {j['model_type']!r} is not 'bert'")
    if j.get("is_decoder") or j.get("add_cross_attention"):
        raise BertConversionError(f"{source}: is_decoder/add_cross_attention BERT is not supported (encoder only)")
    if j.get("position_embedding_type", "absolute") != "absolute":
        raise BertConversionError(
            f"{source}: position_embedding_type {j['position_embedding_type']!r} is not supported (only 'absolute')"
        )
    unknown = sorted(set(j.get("architectures") or ()) - set(ARCHITECTURES))
    if unknown:
        raise BertConversionError(f"{source}: architectures {unknown} is not supported (supported: "
                                  f"{', '.join(ARCHITECTURES)})")
    act = j.get("hidden_act", "gelu")
    if act not in _ACT_FROM_HF:
        raise BertConversionError(f"{source}: hidden_act {act!r} is not one of {sorted(_ACT_FROM_HF)}")
    d = BertConfig()  # its defaults are HF BertConfig's defaults
    if "num_labels" in j:
        num_labels = j["num_labels"]
    elif j.get("id2label"):
        num_labels = len(j["id2label"])
    else:
        num_labels = d.num_labels
    fields = dict(
        vocab_size=j.get("vocab_size", d.vocab_size),
        hidden_size=j.get("hidden_size", d.hidden_size),
        num_layers=j.get("num_hidden_layers", d.num_layers),
        num_heads=j.get("num_attention_heads", d.num_heads),
        intermediate_size=j.get("intermediate_size", d.intermediate_size),
        max_position_embeddings=j.get("max_position_embeddings", d.max_position_embeddings),
        type_vocab_size=j.get("type_vocab_size", d.type_vocab_size),
        hidden_act=_ACT_FROM_HF[act],
        dropout_rate=j.get("hidden_dropout_prob", d.dropout_rate),
        attention_dropout_rate=j.get("attention_probs_dropout_prob", d.attention_dropout_rate),
        layer_norm_epsilon=j.get("layer_norm_eps", d.layer_norm_epsilon),
        num_labels=num_labels,
        classifier_dropout_rate=j.get("classifier_dropout"),
        pad_id=d.pad_id if j.get("pad_token_id") is None else j["pad_token_id"],
        initializer_range=j.get("initializer_range", d.initializer_range),
    )
    fields.update(overrides)
    if "label_names" not in overrides:  # after the overrides: num_labels may be one of them
        fields["label_names"] = _label_names(j.get("id2label"), fields["num_labels"])
    try:
        return BertConfig(**fields)
    except (TypeError, ValueError) as e:
        raise BertConversionError(f"{source}: {e}") from e


def _label_names(id2label, num_labels) -> Optional[tuple[str, ...]]:
    """id2label's names in id order; None where they are HF's defaults (LABEL_<i>) or cannot be the classes'
    names (not one distinct name per class id 0..num_labels-1): those are only kept for export, never needed."""
    if not isinstance(id2label, dict) or not isinstance(num_labels, int) or len(id2label) != num_labels:
        return None
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    names = tuple(by_id.get(i, "") for i in range(num_labels))
    if not all(names) or len(set(names)) != num_labels or names == _hf_default_labels(num_labels):
        return None
    return names


def _hf_default_labels(num_labels: int) -> tuple[str, ...]:
    return tuple(f"LABEL_{i}" for i in range(num_labels))


def bert_config_to_hf(cfg: BertConfig, architectures: Optional[list[str]] = None) -> dict:
    if cfg.hidden_act not in _ACT_TO_HF:
        raise BertConversionError(f"hidden_act {cfg.hidden_act!r} has no Hugging Face equivalent")
    names = cfg.label_names or _hf_default_labels(cfg.num_labels)
    out = {
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "hidden_act": _ACT_TO_HF[cfg.hidden_act],
        "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "layer_norm_eps": cfg.layer_norm_epsilon,
        "classifier_dropout": cfg.classifier_dropout_rate,
        "pad_token_id": cfg.pad_id,
        "initializer_range": cfg.initializer_range,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
        "torch_dtype": "float32",
    }
    if architectures:
        out["architectures"] = list(architectures)
        if "BertForSequenceClassification" in architectures and cfg.num_labels == 1:
            out["problem_type"] = "regression"  # what HF infers from one label; said, so that no reader guesses
    return out


# ------------------------------------------------------------------- key mapping


class _Entry(NamedTuple):
    hf_key: str
    path: tuple  # into the params tree
    shape: tuple  # t5x_lite shape
    hf_shape: tuple
    n_in: int  # >0: torch Linear weight whose input is the first n_in axes here; 0: same layout


def _linear(hf_key: str, path: tuple, shape: tuple, n_in: int = 1) -> _Entry:
    hf_shape = (math.prod(shape[n_in:]), math.prod(shape[:n_in]))
    return _Entry(hf_key, path, shape, hf_shape, n_in)


def _same(hf_key: str, path: tuple, shape: tuple) -> _Entry:
    """A vector; flat in HF even where it is split per head here ([heads, kv] biases)."""
    return _Entry(hf_key, path, shape, (math.prod(shape),), 0)


def _table(hf_key: str, path: tuple, shape: tuple) -> _Entry:
    return _Entry(hf_key, path, shape, shape, 0)


def _norm(hf: str, path: tuple, e: int) -> list[_Entry]:
    return [_same(hf + ".weight", path + ("scale",), (e,)), _same(hf + ".bias", path + ("bias",), (e,))]


def _entries(cfg: BertConfig, prefix: str, pooler: bool, mlm: bool, classifier: bool) -> list[_Entry]:
    e, n, h, f, v = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size
    p, b = prefix, ("bert",)
    out = [
        _table(p + "embeddings.word_embeddings.weight", b + ("word_embeddings", "embedding"), (v, e)),
        _table(
            p + "embeddings.position_embeddings.weight",
            b + ("position_embeddings", "embedding"),
            (cfg.max_position_embeddings, e),
        ),
        _table(
            p + "embeddings.token_type_embeddings.weight",
            b + ("token_type_embeddings", "embedding"),
            (cfg.type_vocab_size, e),
        ),
        *_norm(p + "embeddings.LayerNorm", b + ("embeddings_layer_norm",), e),
    ]
    for i in range(cfg.num_layers):
        hf, fl = f"{p}encoder.layer.{i}.", b + (f"layers_{i}",)
        for proj in ("query", "key", "value"):
            out += [
                _linear(hf + f"attention.self.{proj}.weight", fl + ("attention", proj, "kernel"), (e, n, h)),
                _same(hf + f"attention.self.{proj}.bias", fl + ("attention", proj, "bias"), (n, h)),
            ]
        out += [
            _linear(hf + "attention.output.dense.weight", fl + ("attention", "out", "kernel"), (n, h, e), n_in=2),
            _same(hf + "attention.output.dense.bias", fl + ("attention", "out", "bias"), (e,)),
            *_norm(hf + "attention.output.LayerNorm", fl + ("attention_layer_norm",), e),
            _linear(hf + "intermediate.dense.weight", fl + ("mlp", "wi", "kernel"), (e, f)),
            _same(hf + "intermediate.dense.bias", fl + ("mlp", "wi", "bias"), (f,)),
            _linear(hf + "output.dense.weight", fl + ("mlp", "wo", "kernel"), (f, e)),
            _same(hf + "output.dense.bias", fl + ("mlp", "wo", "bias"), (e,)),
            *_norm(hf + "output.LayerNorm", fl + ("mlp_layer_norm",), e),
        ]
    if pooler:
        out += [
            _linear(p + "pooler.dense.weight", b + ("pooler", "kernel"), (e, e)),
            _same(p + "pooler.dense.bias", b + ("pooler", "bias"), (e,)),
        ]
    if mlm:
        out += [
            _linear("cls.predictions.transform.dense.weight", ("mlm_dense", "kernel"), (e, e)),
            _same("cls.predictions.transform.dense.bias", ("mlm_dense", "bias"), (e,)),
            *_norm("cls.predictions.transform.LayerNorm", ("mlm_layer_norm",), e),
            _same("cls.predictions.bias", ("mlm_bias",), (v,)),
        ]
    if classifier:
        out += [
            _linear("classifier.weight", ("classifier", "kernel"), (e, cfg.num_labels)),
            _same("classifier.bias", ("classifier", "bias"), (cfg.num_labels,)),
        ]
    return out


def _describe(cfg: BertConfig) -> str:
    return (
        f"vocab_size={cfg.vocab_size}, hidden_size={cfg.hidden_size}, num_layers={cfg.num_layers}, "
        f"num_heads={cfg.num_heads}, intermediate_size={cfg.intermediate_size}, "
        f"max_position_embeddings={cfg.max_position_embeddings}, type_vocab_size={cfg.type_vocab_size}, "
        f"num_labels={cfg.num_labels}"
    )


def _canonical_key(key: str) -> str:
    # Checkpoints converted from TF BERT name LayerNorm parameters gamma/beta.
    if ".LayerNorm.gamma" in key or ".LayerNorm.beta" in key:
        return key.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(".LayerNorm.beta", ".LayerNorm.bias")
    return key


def _is_buffer(key: str) -> bool:
    # Non-persistent index buffers that older transformers versions wrote to disk.
    return key.endswith(("embeddings.position_ids", "embeddings.token_type_ids"))


# ----------------------------------------------------------------------- import


def bert_params_from_hf(
    state: Mapping[str, np.ndarray],
    config: Union[Mapping, BertConfig],
    *,
    source: str = "<state dict>",
    **overrides,
) -> tuple[BertConfig, dict]:
    """HF state dict (+ its config.json dict, or a BertConfig) -> (BertConfig, params in loop layout)."""
    if isinstance(config, BertConfig):
        cfg, config_json = config.replace(**overrides), {}
    else:
        cfg, config_json = bert_config_from_hf(config, source=f"config for {source}", **overrides), config
    remaining = {_canonical_key(k): v for k, v in state.items()}

    prefixed = sorted(k for k in remaining if k.startswith("bert."))
    bare = sorted(k for k in remaining if k.startswith(("embeddings.", "encoder.", "pooler.")))
    if prefixed and bare:
        raise BertConversionError(
            f"{source}: mixes 'bert.'-prefixed keys ({prefixed[0]!r}) with unprefixed ones ({bare[0]!r})"
        )
    if not prefixed and not bare:
        raise BertConversionError(
            f"{source}: no BERT encoder keys ('embeddings.*' or 'bert.embeddings.*'); it starts with "
            f"{sorted(remaining)[:3]}"
        )
    prefix = "bert." if prefixed else ""
    pooler = any(k.startswith(prefix + "pooler.") for k in remaining)
    mlm = any(k.startswith("cls.predictions.") for k in remaining)
    classifier = any(k.startswith("classifier.") for k in remaining)
    if classifier and not pooler:  # BertForTokenClassification's per-token head has the same key names
        raise BertConversionError(f"{source}: 'classifier.*' without '{prefix}pooler.*' is a per-token head "
                                  "(BertForTokenClassification), which is not supported; only sequence "
                                  "classification on the pooled first token is")
    if classifier:
        _check_classification_head(cfg, config_json, source)

    params: dict = {}
    dtype = jnp.dtype(cfg.param_dtype)  # knows bfloat16, which np.dtype does not
    for entry in _entries(cfg, prefix, pooler, mlm, classifier):
        if entry.hf_key not in remaining:
            raise BertConversionError(f"{source}: missing key {entry.hf_key!r} (expected for {_describe(cfg)})")
        w = np.asarray(remaining.pop(entry.hf_key))
        if w.shape != entry.hf_shape:
            raise BertConversionError(
                f"{source}: key {entry.hf_key!r} has shape {w.shape}, expected {entry.hf_shape} "
                f"(from the config: {_describe(cfg)})"
            )
        value = w.T.reshape(entry.shape) if entry.n_in else w.reshape(entry.shape)
        _set(params, entry.path, value.astype(dtype))

    if mlm:
        _check_tied(remaining, config_json, params, source)
    nsp = sorted(k for k in remaining if k.startswith("cls.seq_relationship."))
    if nsp:
        warnings.warn(f"{source}: dropping the next-sentence-prediction head {nsp} (not modelled)")
    unexpected = sorted(k for k in remaining if not _is_buffer(k) and k not in nsp)
    if unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:5])
        if len(unexpected) > 5:
            shown += f" and {len(unexpected) - 5} more"
        raise BertConversionError(f"{source}: unexpected key(s) {shown} for a BERT with {_describe(cfg)}")
    return cfg, params


def _check_classification_head(cfg: BertConfig, config_json: Mapping, source: str) -> None:
    """A head we train as HF does: softmax cross-entropy over >= 2 classes, or regression with one label.

    ``problem_type`` may say multi-label (a sigmoid per class) or multi-output regression: other losses,
    which would import without complaint and train as nonsense.
    """
    problem = config_json.get("problem_type")
    expected = "regression" if cfg.num_labels == 1 else "single_label_classification"
    if problem not in (None, expected):
        raise BertConversionError(f"{source}: problem_type {problem!r} with num_labels={cfg.num_labels} is not "
                                  f"supported (only single-label classification over >= 2 labels, or regression "
                                  "with num_labels=1)")


def _check_tied(remaining: dict, config_json: Mapping, params: dict, source: str) -> None:
    """The MLM decoder is the word-embedding table plus ``cls.predictions.bias``; copies must agree."""
    tied = {
        "cls.predictions.decoder.weight": params["bert"]["word_embeddings"]["embedding"],
        "cls.predictions.decoder.bias": params["mlm_bias"],
    }
    if config_json.get("tie_word_embeddings", True) is False and "cls.predictions.decoder.weight" not in remaining:
        raise BertConversionError(
            f"{source}: tie_word_embeddings is false but 'cls.predictions.decoder.weight' is missing"
        )
    for key, expected in tied.items():
        if key in remaining:
            w = np.asarray(remaining.pop(key))
            if w.shape != expected.shape or not np.array_equal(w.astype(expected.dtype), expected):
                raise BertConversionError(
                    f"{source}: key {key!r} differs from the weight it should be tied to; "
                    "an untied MLM decoder is not supported"
                )


def _set(tree: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


# ----------------------------------------------------------------------- export


def _plain(params: Any) -> dict:
    """Unbox logical-partitioning metadata, drop a ``{'params': ...}`` wrapper, go to loop layout and NumPy."""
    import flax.linen as nn
    import jax

    params = nn.meta.unbox(params)
    if isinstance(params, Mapping) and set(params) == {"params"}:
        params = params["params"]
    params = jax.tree_util.tree_map(np.asarray, params)
    params = unstack_layer_params(params)
    if "word_embeddings" in params:  # a bare BertEncoder tree
        params = {"bert": params}
    return params


def _leaf_paths(tree: Mapping, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in tree.items():
        out += _leaf_paths(v, prefix + (k,)) if isinstance(v, Mapping) else [prefix + (k,)]
    return out


def bert_params_to_hf(params: Any, cfg: BertConfig) -> dict[str, np.ndarray]:
    """Params of BertEncoder / BertForMLM / BertForClassification (loop or scan layout) -> HF float32 state dict.

    Keys get the ``bert.`` prefix when a head is present (as HF ``BertFor*`` saves them), none otherwise.
    """
    params = _plain(params)
    if "bert" not in params:
        raise BertConversionError(f"params have no 'bert' subtree (top-level keys: {sorted(params)})")
    pooler, mlm, classifier = "pooler" in params["bert"], "mlm_dense" in params, "classifier" in params
    entries = _entries(cfg, "bert." if (mlm or classifier) else "", pooler, mlm, classifier)
    unexpected = set(_leaf_paths(params)) - {e.path for e in entries}
    if unexpected:
        shown = sorted("/".join(p) for p in unexpected)[:5]
        raise BertConversionError(f"params: unexpected entries {shown} for a BERT with {_describe(cfg)}")
    out = {}
    for entry in entries:
        node = params
        for k in entry.path:
            if not isinstance(node, Mapping) or k not in node:
                raise BertConversionError(f"params: missing {'/'.join(entry.path)} (needed for {entry.hf_key!r})")
            node = node[k]
        if node.shape != entry.shape:
            raise BertConversionError(
                f"params: {'/'.join(entry.path)} has shape {node.shape}, expected {entry.shape} ({_describe(cfg)})"
            )
        w = node.astype(np.float32)
        w = w.reshape(math.prod(entry.shape[: entry.n_in]), -1).T if entry.n_in else w.reshape(entry.hf_shape)
        out[entry.hf_key] = np.ascontiguousarray(w)
    return out


# ------------------------------------------------------------------ directories


def _weights_file(directory: Path) -> str:
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (directory / name).is_file():
            return str(directory / name)
    return str(directory)


def load_hf_bert(directory: Union[str, Path], **overrides) -> tuple[BertConfig, dict]:
    """Read a local HF BERT directory (config.json + weights); errors name the file at fault."""
    directory = Path(directory)
    config = hf_io.read_config(directory)
    state = hf_io.read_state_dict(directory)
    return bert_params_from_hf(state, config, source=_weights_file(directory), **overrides)


def save_hf_bert(directory: Union[str, Path], params: Any, cfg: BertConfig) -> None:
    """Write a directory that ``transformers`` ``Bert*.from_pretrained`` loads."""
    state = bert_params_to_hf(params, cfg)
    if "cls.predictions.bias" in state:
        arch = "BertForMaskedLM"
    elif "classifier.weight" in state:
        arch = "BertForSequenceClassification"
    else:
        arch = "BertModel"
    hf_io.write_directory(directory, bert_config_to_hf(cfg, architectures=[arch]), state)
