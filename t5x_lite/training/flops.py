"""Analytic FLOPs per training example, and model FLOPs utilization (MFU).

Conventions (the ones peers use, so that MFU numbers compare):

- only matrix multiplies count (layer norms, softmax, activations, the loss and
  the optimizer update are left out);
- 2 FLOPs per multiply-add;
- backward = 2 x forward, so a training step costs 3 x forward;
- attention scores are counted over the full S x S (or S_d x S_e) matrix,
  without a discount for causal masks or padding;
- per example, at the feature lengths the model is fed (padded lengths: the
  count is of work the accelerator does, not of non-padding tokens).

With ``d = d_model``, ``inner = num_heads * d_kv``, ``n_in = len(mlp_activations)``
(1 for a ReLU MLP, 2 for a gated one such as T5 1.1's gated GELU), ``V = vocab_size``
and ``L_e``/``L_d`` the encoder/decoder layer counts:

Encoder-decoder (T5), encoder length ``S_e`` and decoder length ``S_d`` counted
separately (the "6N per token" shortcut is wrong here unless encoder and
decoder parameters are weighted by their own lengths)::

    enc  = L_e * S_e * (8*d*inner + 2*(n_in+1)*d*d_ff + 4*S_e*inner)
    dec  = L_d * (S_d * (12*d*inner + 2*(n_in+1)*d*d_ff + 4*S_d*inner + 4*S_e*inner)
                  + 4*S_e*d*inner)
    head = 2*S_d*d*V
    train = 3 * (enc + dec + head)

  Per encoder layer: Q, K, V, O projections (4 x 2*S*d*inner), the MLP (n_in
  input matrices and one output matrix, 2*S*d*d_ff each), scores QK^T and the
  weighted sum of values (2 x 2*S*S*inner). The decoder adds cross-attention:
  Q and O projections on the decoder side (2*2*S_d*d*inner), K and V on the
  encoder output (2*2*S_e*d*inner, hence the term outside ``S_d * (...)``), and
  its scores and weighted sum (2*2*S_d*S_e*inner).

Decoder-only (the same decoder stack without cross-attention), length ``S``::

    dec  = L_d * S * (8*d*inner + 2*(n_in+1)*d*d_ff + 4*S*inner)
    head = 2*S*d*V
    train = 3 * (dec + head)

BERT-style encoder (``BertConfig``), length ``S``, ``d = hidden_size``,
``ff = intermediate_size``::

    layers = L * (4*2*S*d*d + 2*2*S*d*ff + 4*S*S*d)
    head   = 2*S*d*d + 2*S*d*V      (MLM transform dense + vocabulary projection,
                                     applied to every position)
    train  = 3 * (layers + head)

Reference point (tested): T5 1.1 small (d=512, d_ff=1024, 6 heads x 64,
8 + 8 layers, gated GELU, V=32128) at inputs 512 / targets 114 costs
106,253,402,112 FLOPs = 106.25 GFLOP per training example.

MFU = achieved model FLOP/s / peak FLOP/s of the devices used. Peaks are the
dense (no sparsity) tensor-core numbers from the vendors' datasheets, per
device. For float32 on GPUs the peak is the TF32 tensor-core one: XLA on GPU
runs float32 matmuls in TF32 at JAX's default matmul precision. A device we
have no datasheet number for returns ``None``, and its MFU is reported as n/a
rather than made up.
"""

from __future__ import annotations

from typing import Mapping, Optional, Union

from t5x_lite.models.config import BertConfig, T5Config

# Dense bfloat16 / float16 tensor-core peak FLOP/s per device (datasheet, no sparsity).
# "cpu" (and anything not listed) has no meaningful peak: MFU is n/a there.
PEAK_FLOPS: dict[str, Optional[float]] = {
    "h100": 989e12,  # H100 SXM
    "h100_pcie": 756e12,  # H100 PCIe (device_kind "NVIDIA H100 PCIe")
    "h200": 989e12,
    "a100": 312e12,
    "cpu": None,
}

# Dense TF32 tensor-core peak FLOP/s: what float32 matmuls run at on these GPUs under XLA's default precision.
PEAK_FLOPS_TF32: dict[str, Optional[float]] = {
    "h100": 494.5e12,
    "h100_pcie": 378e12,
    "h200": 494.5e12,
    "a100": 156e12,
    "cpu": None,
}

_HALF_DTYPES = ("bfloat16", "bf16", "float16", "fp16", "half")
_FLOAT32_DTYPES = ("float32", "fp32", "f32", "tf32")


def _device_key(device_kind: str) -> Optional[str]:
    """Map a ``jax.Device.device_kind`` (e.g. 'NVIDIA H100 80GB HBM3') to a PEAK_FLOPS key."""
    kind = device_kind.lower()
    if kind == "cpu":
        return "cpu"
    if "h100" in kind:
        return "h100_pcie" if "pcie" in kind else "h100"
    if "h200" in kind:
        return "h200"
    if "a100" in kind:
        return "a100"
    return None


def peak_flops_for(device_kind: str, dtype: str) -> Optional[float]:
    """Peak matmul FLOP/s of one device for computations in ``dtype``; None when unknown.

    ``device_kind`` is ``jax.devices()[0].device_kind`` (or a PEAK_FLOPS key such as
    'h100'); ``dtype`` is the compute dtype name (the model config's ``dtype``).
    bfloat16/float16 use the dense tensor-core peak, float32 the dense TF32 peak.
    """
    key = device_kind.lower() if device_kind.lower() in PEAK_FLOPS else _device_key(device_kind)
    if key is None:
        return None
    dtype = dtype.lower()
    if dtype in _HALF_DTYPES:
        return PEAK_FLOPS[key]
    if dtype in _FLOAT32_DTYPES:
        return PEAK_FLOPS_TF32[key]
    return None


def mfu(
    flops_per_step: float, step_time_s: float, peak_flops_per_device: Optional[float], num_devices: int
) -> Optional[float]:
    """Model FLOPs utilization in [0, 1]: flops_per_step / step_time_s / (peak * num_devices).

    ``flops_per_step`` is the whole (global) batch's training FLOPs. Returns None when the
    peak is unknown (``peak_flops_per_device is None``): report n/a, never a guess.
    """
    if peak_flops_per_device is None:
        return None
    if step_time_s <= 0:
        raise ValueError(f"step_time_s must be positive, got {step_time_s}")
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}")
    if peak_flops_per_device <= 0:
        raise ValueError(f"peak_flops_per_device must be positive, got {peak_flops_per_device}")
    return flops_per_step / step_time_s / (peak_flops_per_device * num_devices)


def _length(lengths: Mapping[str, int], key: str, what: str) -> int:
    if key not in lengths:
        raise ValueError(f"{what} needs lengths[{key!r}]; got keys {sorted(lengths)}")
    n = int(lengths[key])
    if n <= 0:
        raise ValueError(f"lengths[{key!r}] must be positive, got {n}")
    return n


def encoder_decoder_forward_flops(config: T5Config, encoder_length: int, decoder_length: int) -> dict[str, int]:
    """Forward matmul FLOPs per example, by part: {'encoder', 'decoder', 'head'} (exact integers)."""
    d, d_ff, inner, n_in = config.d_model, config.d_ff, config.num_heads * config.d_kv, len(config.mlp_activations)
    s_e, s_d = encoder_length, decoder_length
    mlp = 2 * (n_in + 1) * d * d_ff
    enc = config.num_encoder_layers * s_e * (8 * d * inner + mlp + 4 * s_e * inner)
    dec = config.num_decoder_layers * (
        s_d * (12 * d * inner + mlp + 4 * s_d * inner + 4 * s_e * inner) + 4 * s_e * d * inner
    )
    head = 2 * s_d * d * config.vocab_size
    return {"encoder": enc, "decoder": dec, "head": head}


def decoder_only_forward_flops(config: T5Config, length: int) -> dict[str, int]:
    """Forward matmul FLOPs per example of the decoder-only LM: {'decoder', 'head'}."""
    d, d_ff, inner, n_in = config.d_model, config.d_ff, config.num_heads * config.d_kv, len(config.mlp_activations)
    s = length
    dec = config.num_decoder_layers * s * (8 * d * inner + 2 * (n_in + 1) * d * d_ff + 4 * s * inner)
    head = 2 * s * d * config.vocab_size
    return {"decoder": dec, "head": head}


def bert_forward_flops(config: BertConfig, length: int) -> dict[str, int]:
    """Forward matmul FLOPs per example of the BERT encoder + MLM head: {'encoder', 'head'}."""
    d, ff, s = config.hidden_size, config.intermediate_size, length
    layers = config.num_layers * (4 * 2 * s * d * d + 2 * 2 * s * d * ff + 4 * s * s * d)
    head = 2 * s * d * d + 2 * s * d * config.vocab_size
    return {"encoder": layers, "head": head}


def forward_flops(
    config: Union[T5Config, BertConfig], lengths: Mapping[str, int], *, decoder_only: bool = False
) -> dict[str, int]:
    """Forward FLOPs per example, by part, for the model that ``config`` (and ``decoder_only``) describe.

    ``lengths`` are the model's feature lengths:

    - encoder-decoder: ``{'inputs': S_e, 'targets': S_d}``;
    - decoder-only: ``{'targets': S}``, the length the decoder sees. For a prefix LM that is
      inputs + targets, i.e. ``DecoderOnlyFeatureConverter.task_lengths(...)['targets']``;
      passing 'inputs' as well is rejected as ambiguous;
    - BERT: ``{'inputs': S}``.

    Other keys (e.g. 'loss_weights' from a converter's task_lengths) are ignored.
    """
    if isinstance(config, BertConfig):
        if decoder_only:
            raise ValueError("decoder_only=True does not apply to a BertConfig")
        return bert_forward_flops(config, _length(lengths, "inputs", "a BERT encoder"))
    if not isinstance(config, T5Config):
        raise TypeError(f"expected a T5Config or BertConfig, got {type(config).__name__}")
    if decoder_only:
        if "inputs" in lengths:
            raise ValueError(
                "a decoder-only model takes lengths={'targets': S} with S the decoder length (for a prefix LM, "
                "inputs + targets: DecoderOnlyFeatureConverter.task_lengths(lengths)['targets']); got 'inputs' too"
            )
        return decoder_only_forward_flops(config, _length(lengths, "targets", "a decoder-only model"))
    return encoder_decoder_forward_flops(
        config, _length(lengths, "inputs", "an encoder-decoder"), _length(lengths, "targets", "an encoder-decoder")
    )


def train_flops_per_example(
    config: Union[T5Config, BertConfig], lengths: Mapping[str, int], *, decoder_only: bool = False
) -> float:
    """Training FLOPs per example (forward + backward = 3 x forward); see the module docstring."""
    return float(3 * sum(forward_flops(config, lengths, decoder_only=decoder_only).values()))
