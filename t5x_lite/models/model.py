"""Model wrappers: a Flax module plus the features it reads and its pure loss.

Each wrapper is a frozen dataclass (gin builds it from a config) exposing
``init(rng, batch)``, ``logits(params, batch, dropout_rng)`` and
``loss_fn(params, batch, dropout_rng) -> (loss, metrics)``; nothing is hidden
in the object, so these functions jit, shard and differentiate as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.errors import ConfigError
from t5x_lite.models.config import BertConfig, T5Config
from t5x_lite.models.decoder_only import DecoderOnly
from t5x_lite.models.stacking import stack_layer_params, unstack_layer_params
from t5x_lite.models.t5 import T5
from t5x_lite.training.losses import squared_error_loss, weighted_mean_loss

Array = jax.Array
Batch = Mapping[str, Array]
Params = Any


def _get(batch: Batch, key: str) -> Optional[Array]:
    return batch.get(key) if key in batch else None


@dataclasses.dataclass(frozen=True)
class _LossOptions:
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    loss_normalizer: Optional[float] = None  # None: divide by the number of target tokens


@dataclasses.dataclass(frozen=True)
class BaseModel(_LossOptions):
    """Shared plumbing: init, layout conversion and the token-level loss."""

    kind = "base"  # overridden; recorded in checkpoints so a restore picks the right wrapper

    @property
    def module(self) -> nn.Module:
        raise NotImplementedError

    def _apply_kwargs(self, batch: Batch) -> dict:
        raise NotImplementedError

    def dummy_batch(self, batch_size: int, lengths: Mapping[str, int]) -> dict:
        raise NotImplementedError

    def init(self, rng: Array, batch: Batch) -> Params:
        """Parameters with their logical-axis boxes removed (plain arrays), initialized under jit.

        Eager (op-by-op) init costs seconds even for a tiny model on CPU; one
        compiled init is faster, and it is what a sharded init will do anyway.
        """
        return jax.jit(lambda r: self.init_params(r, batch))(rng)

    def init_params(self, rng: Array, batch: Batch) -> Params:
        """Initialized parameters as plain arrays in this model's layout; trace it under jit.

        The layers are always drawn in the scan layout (one draw per weight for
        all layers, inside the scan's loop) and unstacked for a loop-layout model:
        a separate draw per layer's weight is a separate random generator and
        normal transform in the program, which made XLA:CPU compile T5 small's
        init in 8.7 s against 3.1 s. The distribution is the same; the values
        differ from drawing layer by layer. On one device the stacked draws are a
        transient copy of the layers' weights (init peaks at up to twice the
        params, still below a train step's); on a sharded mesh each device holds
        only its shard of them plus one layer's draw (per-layer draws were
        generated whole on every device).
        """
        if self.config.scan_layers:
            return nn.unbox(self.module.init({"params": rng, "dropout": rng}, **self._apply_kwargs(batch))["params"])
        scanned = self.replace(config=self.config.replace(scan_layers=True))
        return unstack_layer_params(scanned.init_params(rng, batch))

    def abstract_params(self, batch: Batch) -> Params:
        """Shapes and logical axes without allocating anything (``jax.eval_shape``)."""
        return jax.eval_shape(
            lambda r: self.module.init({"params": r, "dropout": r}, **self._apply_kwargs(batch))["params"],
            jax.random.key(0),
        )

    def logits(self, params: Params, batch: Batch, dropout_rng: Optional[Array] = None) -> Array:
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        return self.module.apply(
            {"params": params}, **self._apply_kwargs(batch), enable_dropout=dropout_rng is not None, rngs=rngs
        )

    def _token_loss(self, params: Params, batch: Batch, dropout_rng, targets_key: str, weights_key: str,
                    default_weights=None):
        logits = self.logits(params, batch, dropout_rng)
        targets = batch[targets_key]
        weights = _get(batch, weights_key)
        if weights is None:
            weights = default_weights(targets)
        return weighted_mean_loss(logits, targets, weights, z_loss=self.z_loss,
                                  label_smoothing=self.label_smoothing, normalizer=self.loss_normalizer)

    def replace(self, **changes) -> "BaseModel":
        return dataclasses.replace(self, **changes)

    def to_loop_layout(self, params: Params) -> Params:
        return unstack_layer_params(params) if self.config.scan_layers else params

    def from_loop_layout(self, params: Params) -> Params:
        return stack_layer_params(params) if self.config.scan_layers else params


@dataclasses.dataclass(frozen=True)
class EncoderDecoderModel(BaseModel):
    """T5-family encoder-decoder trained with teacher forcing on ``decoder_target_tokens``."""

    config: T5Config = T5Config()
    kind = "encoder_decoder"

    @property
    def module(self) -> nn.Module:
        return T5(self.config)

    def _apply_kwargs(self, batch: Batch) -> dict:
        return dict(
            encoder_input_tokens=batch["encoder_input_tokens"],
            decoder_input_tokens=batch["decoder_input_tokens"],
            encoder_segment_ids=_get(batch, "encoder_segment_ids"),
            decoder_segment_ids=_get(batch, "decoder_segment_ids"),
            encoder_positions=_get(batch, "encoder_positions"),
            decoder_positions=_get(batch, "decoder_positions"),
        )

    def feature_converter(self, pack: bool = False):
        from t5x_lite.data.features import EncDecFeatureConverter

        return EncDecFeatureConverter(pack=pack, decoder_start_id=self.config.decoder_start_id)

    def dummy_batch(self, batch_size: int, lengths: Mapping[str, int]) -> dict:
        enc = jnp.ones((batch_size, lengths["inputs"]), jnp.int32)
        dec = jnp.ones((batch_size, lengths["targets"]), jnp.int32)
        return {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": dec}

    def loss_fn(self, params: Params, batch: Batch, dropout_rng: Optional[Array] = None):
        return self._token_loss(params, batch, dropout_rng, "decoder_target_tokens", "decoder_loss_weights",
                                lambda targets: targets != self.config.pad_id)


@dataclasses.dataclass(frozen=True)
class DecoderOnlyModel(BaseModel):
    """Causal or prefix LM; the loss covers the positions ``decoder_loss_weights`` marks (targets only).

    ``prefix_lm=True`` trains on ``inputs ++ targets`` with a bidirectional prefix;
    ``False`` is a plain LM on ``targets``.
    """

    config: T5Config = T5Config()
    prefix_lm: bool = True
    kind = "decoder_only"

    def feature_converter(self, pack: bool = False):
        from t5x_lite.data.features import DecoderOnlyFeatureConverter

        return DecoderOnlyFeatureConverter(pack=pack, prefix_lm=self.prefix_lm)

    @property
    def module(self) -> nn.Module:
        return DecoderOnly(self.config)

    def _apply_kwargs(self, batch: Batch) -> dict:
        return dict(
            decoder_input_tokens=batch["decoder_input_tokens"],
            decoder_segment_ids=_get(batch, "decoder_segment_ids"),
            decoder_positions=_get(batch, "decoder_positions"),
            decoder_causal_attention=_get(batch, "decoder_causal_attention"),
        )

    def dummy_batch(self, batch_size: int, lengths: Mapping[str, int]) -> dict:
        dec = jnp.ones((batch_size, lengths["targets"]), jnp.int32)
        return {"decoder_input_tokens": dec, "decoder_target_tokens": dec}

    def loss_fn(self, params: Params, batch: Batch, dropout_rng: Optional[Array] = None):
        return self._token_loss(params, batch, dropout_rng, "decoder_target_tokens", "decoder_loss_weights",
                                lambda targets: targets != self.config.pad_id)


@dataclasses.dataclass(frozen=True)
class _BertModel(BaseModel):
    """Shared plumbing of the BERT wrappers: features and the module by name."""

    config: BertConfig = BertConfig()
    module_name = "BertModel"

    @property
    def module(self) -> nn.Module:
        from t5x_lite.models import bert

        return getattr(bert, self.module_name)(self.config)

    def _apply_kwargs(self, batch: Batch) -> dict:
        return dict(
            input_tokens=batch["input_tokens"],
            token_type_ids=_get(batch, "token_type_ids"),
            segment_ids=_get(batch, "segment_ids"),
            positions=_get(batch, "positions"),
        )

    def dummy_batch(self, batch_size: int, lengths: Mapping[str, int]) -> dict:
        tokens = jnp.ones((batch_size, lengths["inputs"]), jnp.int32)
        return {"input_tokens": tokens, "mlm_targets": tokens, "mlm_weights": jnp.ones(tokens.shape, jnp.float32),
                "labels": jnp.zeros((batch_size,), jnp.int32)}


@dataclasses.dataclass(frozen=True)
class EncoderOnlyMLMModel(_BertModel):
    """BERT-style masked LM; the loss covers the positions ``mlm_weights`` marks."""

    kind = "encoder_only_mlm"
    module_name = "BertForMLM"

    def feature_converter(self, pack: bool = False):
        from t5x_lite.data.features import EncoderOnlyFeatureConverter

        return EncoderOnlyFeatureConverter(pack=pack)

    def loss_fn(self, params: Params, batch: Batch, dropout_rng: Optional[Array] = None):
        return self._token_loss(params, batch, dropout_rng, "mlm_targets", "mlm_weights")


@dataclasses.dataclass(frozen=True)
class EncoderOnlyClassificationModel(_BertModel):
    """BERT-style sequence classification on the pooled first token; one example per row.

    ``BertConfig.num_labels`` >= 2 classes train with softmax cross-entropy on an integer ``label``;
    ``num_labels = 1`` is Hugging Face's regression head (STS-B's similarity score, a cross-encoder's
    relevance): mean squared error on a float ``label``, for which ``z_loss`` (a softmax's normalizer)
    does not apply. Either loss is weighted by ``label_weights`` where the batch has them (an example's
    ``label_weight``, 0 on a row without a label).
    """

    kind = "encoder_only_classification"
    module_name = "BertForClassification"

    def __post_init__(self):
        if self.regression and self.label_smoothing:
            raise ConfigError(f"label_smoothing={self.label_smoothing} smooths classes; BertConfig.num_labels = 1 "
                              "is a regression head, which has none: set it to 0")

    @property
    def regression(self) -> bool:
        return self.config.num_labels == 1

    def feature_converter(self, pack: bool = False):
        from t5x_lite.data.features import EncoderOnlyFeatureConverter

        if pack:
            raise ValueError("classification reads the pooled first token: one example per row, pack=False")
        return EncoderOnlyFeatureConverter(classification=True, num_labels=self.config.num_labels,
                                           type_vocab_size=self.config.type_vocab_size)

    def dummy_batch(self, batch_size: int, lengths: Mapping[str, int]) -> dict:
        batch = super().dummy_batch(batch_size, lengths)
        if self.regression:
            batch["labels"] = jnp.zeros((batch_size,), jnp.float32)
        return batch

    def loss_fn(self, params: Params, batch: Batch, dropout_rng: Optional[Array] = None):
        logits = self.logits(params, batch, dropout_rng)
        weights = batch.get("label_weights")  # 0 on a row without a label
        if self.regression:
            return squared_error_loss(logits[:, 0], batch["labels"], weights, normalizer=self.loss_normalizer)
        labels = batch["labels"][:, None]  # one "token" per example
        return weighted_mean_loss(logits[:, None, :], labels, None if weights is None else weights[:, None],
                                  z_loss=self.z_loss, label_smoothing=self.label_smoothing,
                                  normalizer=self.loss_normalizer)


@dataclasses.dataclass(frozen=True)
class EncoderOnlyModel(_BertModel):
    """A bare BERT encoder (e.g. a converted sentence-transformers checkpoint); ``logits`` are its hidden states.

    It has no training objective of its own: fine-tune it through
    ``EncoderOnlyClassificationModel`` (the encoder params restore into it).
    """

    kind = "encoder_only"
    module_name = "BertModel"
    pooler: bool = True  # False: a checkpoint saved without one (HF add_pooling_layer=False)

    @property
    def module(self) -> nn.Module:
        from t5x_lite.models import bert

        return bert.BertModel(self.config, pooler=self.pooler)

    def logits(self, params: Params, batch: Batch, dropout_rng: Optional[Array] = None) -> Array:
        return super().logits(params, batch, dropout_rng)[0]

    def loss_fn(self, params: Params, batch: Batch, dropout_rng: Optional[Array] = None):
        raise NotImplementedError("a bare encoder has no loss; use EncoderOnlyMLMModel or "
                                  "EncoderOnlyClassificationModel")
