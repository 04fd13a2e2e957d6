"""UL2's mixture of denoisers (Tay et al. 2022, "Unifying Language Learning Paradigms").

Each example is handled by one denoiser, drawn at random (uniformly by
default: the paper's appendix code, ``ul2_objective``, samples its denoisers'
datasets uniformly when given no ``rates``, each document going to one
denoiser), and its inputs start with the paradigm token of the denoiser's mode:

- R (regular): span corruption, (mean span 3, rate 0.15) and (8, 0.15).
- S (sequential): prefix LM; the paper writes (mu = L/4, r = 0.25, n = 1), one
  span at the end of about a quarter of the text (our ``PrefixLM(0.25)``). The
  appendix code instead reuses T5's ``prefix_lm`` (split uniform over the
  text, a half on average); ``Denoiser("S", 0.5)`` gives that.
- X (extreme): (3, 0.5), (8, 0.5), (64, 0.15), (64, 0.5).

The paper writes the paradigm tokens [R], [S], [X]; the released UL2 20B uses
[NLU], [S2S], [NLG]. Either way the caller passes their ids.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Mapping, Optional, Sequence, Union

import numpy as np

from t5x_lite.data.objectives import encodings as enc
from t5x_lite.data.objectives.base import Objective, as_tokens
from t5x_lite.data.objectives.noise import span_corruption_input_length
from t5x_lite.data.objectives.t5 import PrefixLM, span_corruption

MODES = ("R", "S", "X")


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """One UL2 denoiser: ``mode`` R, S or X; the corruption rate; the mean span length (R and X)."""

    mode: str
    noise_density: float
    mean_noise_span_length: Optional[float] = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if (self.mode == "S") != (self.mean_noise_span_length is None):
            raise ValueError("the S-denoiser has no span length; R and X denoisers need one")

    def objective(self, vocab: enc.VocabInfo) -> Objective:
        if self.mode == "S":
            return PrefixLM(name=f"S_{self.noise_density:g}", target_fraction=self.noise_density)
        return span_corruption(
            vocab,
            self.noise_density,
            self.mean_noise_span_length,
            name=f"{self.mode}_{self.mean_noise_span_length:g}_{self.noise_density:g}",
        )


UL2_DENOISERS = (
    Denoiser("R", 0.15, 3.0),
    Denoiser("R", 0.15, 8.0),
    Denoiser("S", 0.25),
    Denoiser("X", 0.5, 3.0),
    Denoiser("X", 0.5, 8.0),
    Denoiser("X", 0.15, 64.0),
    Denoiser("X", 0.5, 64.0),
)


def _sentinels_apart_from(vocab: enc.VocabInfo, paradigm_ids: Sequence[int]) -> enc.VocabInfo:
    """``vocab`` with its sentinels cut short of the paradigm tokens that are themselves sentinels.

    Paradigm tokens borrowed from the lowest sentinels (the bundled vocabulary's
    ``<extra_id_97..99>``) would otherwise also mark spans once an example has
    that many (UL2's X-denoisers reach 97 spans at 393 input tokens). Spans past
    the last free sentinel reuse it, as they reuse ``<extra_id_99>`` otherwise.
    The denoisers draw no random tokens, so nothing else reads the cut ids.
    """
    top = vocab.vocab_size
    taken = sorted(top - 1 - i for i in paradigm_ids if 0 <= top - 1 - i < vocab.num_extra_ids)
    if not taken:
        return vocab
    if taken[0] == 0:
        raise ValueError("a paradigm token is <extra_id_0>, which span corruption needs as its first sentinel")
    return dataclasses.replace(vocab, num_extra_ids=taken[0])


@dataclasses.dataclass(frozen=True)
class MixtureOfDenoisers:
    """UL2's objective: one random denoiser per example plus its paradigm token.

    Unlike the other objectives it is built for one pair of feature lengths:
    each denoiser needs its own raw length (span corruption at rate 0.5 eats
    nearly twice as much text as at 0.15), so the pipeline cuts pieces of the
    largest and each example keeps the first ``raw_length(denoiser)`` tokens of
    its piece. The rest of the piece is not used. The paradigm token takes one
    input position, so every denoiser's inputs still come out at exactly
    ``inputs_length`` (span corruption) or shorter (S).

    Attributes:
      vocab: sentinel ids.
      paradigm_tokens: mode ("R", "S", "X") -> token id or ids, e.g. the ids of
        [NLU], [S2S], [NLG].
      inputs_length, targets_length: the feature lengths, EOS included.
      denoisers: the mixture; UL2's seven by default.
      rates: sampling weight of each denoiser (normalized); ``None`` is uniform.
    """

    vocab: enc.VocabInfo
    paradigm_tokens: Mapping[str, Union[int, Sequence[int]]]
    inputs_length: int
    targets_length: Optional[int] = None
    denoisers: Sequence[Denoiser] = UL2_DENOISERS
    rates: Optional[Sequence[float]] = None
    name: str = "ul2"
    features: ClassVar[tuple[str, ...]] = ("inputs", "targets")
    _objectives: tuple = dataclasses.field(init=False, repr=False, compare=False)
    _raw_lengths: tuple = dataclasses.field(init=False, repr=False, compare=False)
    _probabilities: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = {d.mode for d in self.denoisers} - set(self.paradigm_tokens)
        if missing:
            raise ValueError(f"no paradigm token for mode(s) {sorted(missing)}")
        rates = np.ones(len(self.denoisers)) if self.rates is None else np.asarray(self.rates, dtype=np.float64)
        if rates.shape != (len(self.denoisers),) or (rates < 0).any() or rates.sum() <= 0:
            raise ValueError(f"rates must be {len(self.denoisers)} non-negative weights, got {self.rates}")
        sentinels = _sentinels_apart_from(self.vocab, [int(i) for m in self.paradigm_tokens
                                                        for i in self.paradigm_ids(m)])
        objectives = tuple(d.objective(sentinels) for d in self.denoisers)
        self._check_targets_length(objectives)
        raw_lengths = tuple(
            objective.required_raw_length(self._denoiser_feature_lengths(d))
            for d, objective in zip(self.denoisers, objectives)
        )
        object.__setattr__(self, "_objectives", objectives)
        object.__setattr__(self, "_raw_lengths", raw_lengths)
        object.__setattr__(self, "_probabilities", rates / rates.sum())

    def _check_targets_length(self, objectives: Sequence[Objective]) -> None:
        """One error naming the targets length every denoiser fits in, rather than one per denoiser."""
        if self.targets_length is None:
            return
        needed = {}
        for d, objective in zip(self.denoisers, objectives):
            if d.mode != "S":  # the S-denoiser's continuation is cut to fit, as prefix_lm's is
                inputs = self._denoiser_feature_lengths(d)["inputs"]
                needed[objective.name] = span_corruption_input_length(inputs, d.noise_density,
                                                                      d.mean_noise_span_length)[1]
        worst = max(needed, key=needed.get, default=None)
        if worst is not None and self.targets_length < needed[worst]:
            raise ValueError(f"{self.name}: inputs length {self.inputs_length} needs a targets length of at least "
                             f"{needed[worst]} (denoiser {worst} corrupts the most text), got "
                             f"{self.targets_length}: raise the targets length or shorten the inputs")

    def paradigm_ids(self, mode: str) -> np.ndarray:
        return np.atleast_1d(np.asarray(self.paradigm_tokens[mode]))

    def _denoiser_feature_lengths(self, denoiser: Denoiser) -> dict[str, int]:
        lengths = {"inputs": self.inputs_length - self.paradigm_ids(denoiser.mode).size}
        if self.targets_length is not None:
            lengths["targets"] = self.targets_length
        return lengths

    def raw_length(self, index: int) -> int:
        """Raw tokens that denoiser ``index`` uses."""
        return self._raw_lengths[index]

    def required_raw_length(self, feature_lengths: Mapping[str, int]) -> int:
        given = (feature_lengths["inputs"], feature_lengths.get("targets", self.targets_length))
        if given != (self.inputs_length, self.targets_length):
            raise ValueError(
                f"{self.name} was built for inputs/targets lengths {self.inputs_length}/{self.targets_length}, "
                f"asked about {given[0]}/{given[1]}"
            )
        return max(self._raw_lengths)

    def sample_denoiser(self, rng: np.random.Generator) -> int:
        """Index of the denoiser for the next example."""
        return int(rng.choice(len(self.denoisers), p=self._probabilities))

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        tokens = as_tokens(tokens)
        index = self.sample_denoiser(rng)
        example = self._objectives[index](tokens[: self._raw_lengths[index]], rng)
        prefix = self.paradigm_ids(self.denoisers[index].mode).astype(tokens.dtype)
        example["inputs"] = np.concatenate([prefix, example["inputs"]])
        return example
