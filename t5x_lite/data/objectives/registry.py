"""Objectives by name: T5's gin objective names plus ``lm``, ``bert_mlm`` and ``ul2``."""

from __future__ import annotations

import functools
from typing import Any, Callable

from t5x_lite.data.objectives import t5
from t5x_lite.data.objectives.base import Objective
from t5x_lite.data.objectives.bert import BertMLM
from t5x_lite.data.objectives.encodings import VocabInfo
from t5x_lite.data.objectives.ul2 import MixtureOfDenoisers
from t5x_lite.data.sources import DataError


def _ignore_vocab(factory: Callable[..., Objective]) -> Callable[..., Objective]:
    """For objectives that use no special token ids."""
    return lambda vocab, **kwargs: factory(**kwargs)


_FACTORIES: dict[str, Callable[..., Objective]] = {
    # Span length study (T5 paper table 7); span_3_15_u_u is the T5 baseline.
    **{
        f"span_{n}_15_u_u": functools.partial(t5.span_corruption, noise_density=0.15, mean_noise_span_length=float(n))
        for n in (2, 3, 5, 10)
    },
    # Corruption rate study (table 6), i.i.d. "replace corrupted spans".
    **{f"iid_{d}_u_u": functools.partial(t5.iid_replace_spans, noise_density=d / 100) for d in (10, 15, 25, 50)},
    # Tables 4 and 5.
    "iid_15_r10s90_f": t5.bert_style,
    "iid_15_s80r10k10_f": functools.partial(t5.bert_style, keep_prob=0.1),
    "iid_15_m_f": t5.mass_style,
    "iid_15_d_d": t5.drop_tokens,
    "all_permute": t5.deshuffling,
    "prefix_lm": _ignore_vocab(t5.PrefixLM),
    "lm": _ignore_vocab(t5.LanguageModel),
    "bert_mlm": BertMLM,
    # Needs paradigm_tokens= and inputs_length= (and usually targets_length=).
    "ul2": MixtureOfDenoisers,
}

OBJECTIVE_NAMES = tuple(_FACTORIES)
NEEDS_SENTINELS = tuple(name for name in OBJECTIVE_NAMES if name.endswith("_u_u")) + ("ul2",)


def make_objective(name: str, vocab: VocabInfo, **kwargs: Any) -> Objective:
    """The objective called ``name``; ``kwargs`` go to its constructor (required for ``ul2``)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVE_NAMES)}") from None
    if vocab.num_extra_ids == 0 and name in NEEDS_SENTINELS:
        raise DataError(f"objective {name!r} marks spans with sentinel ids, and this vocabulary has none "
                         "(VocabInfo.num_extra_ids = 0, as a WordPiece vocabulary); objectives without sentinels: "
                         + ", ".join(n for n in OBJECTIVE_NAMES if n not in NEEDS_SENTINELS))
    return factory(vocab, **kwargs)
