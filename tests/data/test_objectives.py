"""Objectives against their definitions (T5 paper section 3.3, UL2), statistically where random."""

from __future__ import annotations

import math

import numpy as np
import pytest

from t5x_lite.data import objectives as obj
from t5x_lite.data.objectives import VocabInfo

VOCAB = VocabInfo(vocab_size=32100)  # T5: 32000 pieces + 100 extra ids
FIRST_SENTINEL = VOCAB.vocab_size - VOCAB.num_extra_ids
PARADIGM = {"R": 11, "S": 12, "X": 13}


def text(length: int, seed: int = 0) -> np.ndarray:
    """Ordinary tokens only (no reserved ids, no sentinels), as int32 like a tokenizer's output."""
    return np.random.default_rng(seed).integers(3, FIRST_SENTINEL, size=length).astype(np.int32)


def is_sentinel(tokens: np.ndarray) -> np.ndarray:
    return tokens >= FIRST_SENTINEL


def fill_sentinels(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Puts each target span back in place of its input sentinel (the ``u_u`` contract)."""
    input_sentinels = inputs[is_sentinel(inputs)]
    target_sentinels = targets[is_sentinel(targets)]
    assert len(targets) == 0 or is_sentinel(targets[:1]).all(), "targets must open with a sentinel"
    np.testing.assert_array_equal(target_sentinels[: len(input_sentinels)], input_sentinels)
    spans, filled = [], []
    for token in targets:
        if is_sentinel(token):
            spans.append([])
        else:
            spans[-1].append(token)
    spans = iter(spans)
    for token in inputs:
        filled.extend(next(spans) if is_sentinel(token) else [token])
    return np.array(filled, dtype=inputs.dtype)


def noise_spans(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


# ---------------------------------------------------------------- lengths


def test_span_corruption_lengths_t5_example():
    # T5's random_spans_helper at the paper's baseline: 568 raw tokens -> 512 inputs / 114 targets (EOS counted).
    assert obj.span_corruption_input_length(512, 0.15, 3.0) == (568, 114)
    objective = obj.make_objective("span_3_15_u_u", VOCAB)
    assert objective.required_raw_length({"inputs": 512, "targets": 114}) == 568


@pytest.mark.parametrize(
    "inputs_length, density, mean_span",
    [(512, 0.15, 3.0), (512, 0.15, 2.0), (512, 0.15, 10.0), (256, 0.25, 3.0), (1024, 0.15, 3.0),
     (64, 0.15, 3.0), (64, 0.15, 64.0), (16, 0.15, 3.0), (511, 0.5, 3.0), (511, 0.5, 64.0), (512, 0.5, 8.0)],
)
def test_span_corruption_fills_inputs_exactly(inputs_length, density, mean_span):
    raw_length, targets_length = obj.span_corruption_input_length(inputs_length, density, mean_span)
    objective = obj.span_corruption(VOCAB, density, mean_span)
    rng = np.random.default_rng(1)
    for seed in range(20):
        example = objective(text(raw_length, seed), rng)
        if density == 0.5:  # T5's tweak may give up one input position so that targets <= inputs
            assert len(example["inputs"]) + 1 in (inputs_length, inputs_length - 1)
        else:
            assert len(example["inputs"]) + 1 == inputs_length
        assert len(example["targets"]) + 1 == targets_length
    # One raw token more would no longer fit.
    longer = objective(text(raw_length + 1), rng)
    assert len(longer["inputs"]) + 1 >= inputs_length


def test_raw_lengths_of_other_objectives():
    lengths = {"inputs": 512, "targets": 512}
    raw = {name: obj.make_objective(name, VOCAB).required_raw_length(lengths) for name in obj.OBJECTIVE_NAMES[:-1]}
    assert raw["iid_15_u_u"] == raw["iid_15_d_d"] == raw["prefix_lm"] == 511
    assert raw["bert_mlm"] == 512  # MLM features get no EOS: every position is text
    assert raw["lm"] == 511
    # Full-text targets must fit the targets length too.
    full = obj.make_objective("iid_15_m_f", VOCAB)
    assert full.required_raw_length({"inputs": 512, "targets": 128}) == 127
    assert obj.make_objective("lm", VOCAB).required_raw_length({"targets": 1024}) == 1023


def test_targets_length_too_short_is_an_error():
    with pytest.raises(ValueError, match="targets"):
        obj.make_objective("span_3_15_u_u", VOCAB).required_raw_length({"inputs": 512, "targets": 113})


# ---------------------------------------------------------------- noise masks


def test_random_spans_mask_counts_and_shape():
    length, density, mean_span = 568, 0.15, 3.0
    rng = np.random.default_rng(0)
    masks = np.stack([obj.random_spans_noise_mask(length, density, mean_span, rng) for _ in range(2000)])
    # Counts are deterministic: round(568 * 0.15) = 85 noise tokens in round(85 / 3) = 28 spans.
    assert (masks.sum(axis=1) == 85).all()
    spans = [noise_spans(m) for m in masks]
    assert all(len(s) == 28 for s in spans)
    assert not masks[:, 0].any() and masks[:, -1].all()  # starts with non-noise, ends with noise (T5)
    assert abs(masks.mean() - density) < 0.01
    all_spans = np.concatenate(spans)
    assert abs(all_spans.mean() - mean_span) < 0.1
    # Span lengths are parts of a uniformly random composition of 85 into 28 parts:
    # P(part = k) = C(85 - k - 1, 26) / C(84, 27).
    for k in range(1, 6):
        expected = math.comb(85 - k - 1, 26) / math.comb(84, 27)
        assert abs((all_spans == k).mean() - expected) < 0.01
    # Away from the ends, every position is noise equally often.
    middle = masks[:, length // 4 : 3 * length // 4].mean(axis=0)
    assert abs(middle.mean() - density) < 0.01 and middle.std() < 0.03


def test_iid_mask_density_and_span_length():
    rng = np.random.default_rng(0)
    for density in (0.1, 0.15, 0.5):
        masks = [obj.iid_noise_mask(511, density, rng) for _ in range(2000)]
        assert abs(np.mean(masks) - density) < 0.01
        # Runs of i.i.d. noise are geometric: mean length 1 / (1 - p).
        runs = np.concatenate([noise_spans(m) for m in masks])
        assert abs(runs.mean() - 1 / (1 - density)) < 0.02


def test_mask_edge_cases():
    rng = np.random.default_rng(0)
    assert obj.random_spans_noise_mask(0, 0.15, 3.0, rng).shape == (0,)
    assert not obj.random_spans_noise_mask(1, 0.15, 3.0, rng).any()  # one token is never noise (T5)
    np.testing.assert_array_equal(obj.random_spans_noise_mask(2, 0.15, 3.0, rng), [False, True])
    # round(3 * 0.15) = 0 noise tokens: clipped to 1, in 1 span.
    for _ in range(20):
        mask = obj.random_spans_noise_mask(3, 0.15, 3.0, rng)
        assert mask.sum() == 1 and len(noise_spans(mask)) == 1
    assert obj.span_counts(3, 0.15, 3.0) == (1, 1)
    assert obj.span_counts(10, 0.99, 1.0) == (9, 1)  # noise clipped to length - 1, spans to non-noise count


# ---------------------------------------------------------------- span corruption (u_u)


def test_paper_figure_2_example():
    words = "Thank you for inviting me to your party last week .".split()
    tokens = np.arange(100, 100 + len(words), dtype=np.int32)
    mask = np.isin(words, ["for", "inviting", "last"])
    inputs = obj.noise_span_to_unique_sentinel(tokens, mask, VOCAB)
    targets = obj.nonnoise_span_to_unique_sentinel(tokens, mask, VOCAB)
    x, y, z = 32099, 32098, 32097  # <extra_id_0>, <extra_id_1>, <extra_id_2>
    t = dict(zip(words, tokens.tolist()))
    assert inputs.tolist() == [t["Thank"], t["you"], x, t["me"], t["to"], t["your"], t["party"], y, t["week"], t["."]]
    assert targets.tolist() == [x, t["for"], t["inviting"], y, t["last"], z]


@pytest.mark.parametrize("name", ["span_2_15_u_u", "span_3_15_u_u", "span_5_15_u_u", "span_10_15_u_u",
                                  "iid_10_u_u", "iid_15_u_u", "iid_25_u_u"])
def test_u_u_sentinels_count_down_and_reconstruct(name):
    objective = obj.make_objective(name, VOCAB)
    raw_length = objective.required_raw_length({"inputs": 512, "targets": 512})
    rng = np.random.default_rng(0)
    starts_with_noise = 0
    for seed in range(200):
        tokens = text(raw_length, seed)
        example = objective(tokens, rng)
        sentinels = example["inputs"][is_sentinel(example["inputs"])]
        # <extra_id_0> = vocab_size - 1 first, then counting down by one per span (iid_25 at 511 tokens
        # sometimes has more than 100 spans: those reuse <extra_id_99>).
        expected = VOCAB.vocab_size - 1 - np.minimum(np.arange(len(sentinels)), VOCAB.num_extra_ids - 1)
        np.testing.assert_array_equal(sentinels, expected)
        assert example["targets"][0] == VOCAB.vocab_size - 1
        np.testing.assert_array_equal(fill_sentinels(example["inputs"], example["targets"]), tokens)
        starts_with_noise += int(is_sentinel(example["inputs"][0]))
    if name.startswith("iid"):
        assert starts_with_noise > 0  # the aligned-sentinel case was exercised


def test_t5_unaligned_targets_when_text_starts_with_noise():
    tokens = np.array([5, 6, 7, 8, 9], dtype=np.int32)
    mask = np.array([True, False, False, True, False])
    s0, s1, s2 = 32099, 32098, 32097
    assert obj.noise_span_to_unique_sentinel(tokens, mask, VOCAB).tolist() == [s0, 6, 7, s1, 9]
    assert obj.nonnoise_span_to_unique_sentinel(tokens, mask, VOCAB).tolist() == [s0, 5, s1, 8, s2]
    t5_code = obj.nonnoise_span_to_unique_sentinel(tokens, mask, VOCAB, align_with_inputs=False)
    assert t5_code.tolist() == [5, s0, 8, s1]


def test_sentinels_beyond_the_extra_ids_reuse_the_last():
    example = obj.make_objective("iid_50_u_u", VOCAB)(text(511), np.random.default_rng(0))
    sentinels = example["inputs"][is_sentinel(example["inputs"])]
    assert len(sentinels) > VOCAB.num_extra_ids  # ~128 spans at 50% i.i.d. noise
    assert sentinels.min() == FIRST_SENTINEL
    assert (example["inputs"] >= 3).all()
    np.testing.assert_array_equal(fill_sentinels(example["inputs"], example["targets"]), text(511))
    with pytest.raises(ValueError, match="sentinels"):
        obj.span_corruption(VocabInfo(1000, num_extra_ids=0))(text(50) % 900 + 3, np.random.default_rng(0))


# ---------------------------------------------------------------- BERT-style, MASS-style


def test_bert_style_r10s90_proportions():
    objective = obj.make_objective("iid_15_r10s90_f", VOCAB)
    rng = np.random.default_rng(0)
    masked = randomized = total = 0
    for seed in range(2000):
        tokens = text(511, seed)
        example = objective(tokens, rng)
        np.testing.assert_array_equal(example["targets"], tokens)  # "f": the full original text
        changed = example["inputs"] != tokens
        masked += int((example["inputs"] == VOCAB.vocab_size - 1).sum())
        randomized += int((changed & (example["inputs"] != VOCAB.vocab_size - 1)).sum())
        total += tokens.size
        assert not is_sentinel(example["inputs"][example["inputs"] != VOCAB.vocab_size - 1]).any()
    corrupted = masked + randomized
    assert abs(corrupted / total - 0.15) < 0.01
    assert abs(randomized / corrupted - 0.1) < 0.01  # the T5 name: 10% random, 90% sentinel, none kept


def test_bert_801010_proportions_given_the_mask():
    rng = np.random.default_rng(0)
    tokens = text(200_000)
    mask = obj.iid_noise_mask(tokens.size, 0.15, rng)
    inputs = obj.noise_token_to_random_token_or_sentinel(tokens, mask, VOCAB, rng, random_prob=0.1, keep_prob=0.1)
    np.testing.assert_array_equal(inputs[~mask], tokens[~mask])
    noisy_in, noisy_orig = inputs[mask], tokens[mask]
    is_mask = noisy_in == VOCAB.mask_token_id
    kept = noisy_in == noisy_orig
    randomized = ~is_mask & ~kept
    assert abs(is_mask.mean() - 0.8) < 0.01 and abs(kept.mean() - 0.1) < 0.01 and abs(randomized.mean() - 0.1) < 0.01
    low, high = VOCAB.random_token_range
    assert (3, FIRST_SENTINEL) == (low, high)
    assert noisy_in[randomized].min() >= low and noisy_in[randomized].max() < high
    assert obj.make_objective("iid_15_s80r10k10_f", VOCAB).name == "iid_15_s80r10k10_f"


def test_mass_style_masks_with_first_sentinel():
    tokens = text(511)
    example = obj.make_objective("iid_15_m_f", VOCAB)(tokens, np.random.default_rng(0))
    masked = example["inputs"] == VOCAB.vocab_size - 1
    assert abs(masked.mean() - 0.15) < 0.05
    np.testing.assert_array_equal(example["inputs"][~masked], tokens[~masked])
    np.testing.assert_array_equal(example["targets"], tokens)


def test_bert_mlm_labels_and_weights():
    bert_vocab = VocabInfo(vocab_size=30522, num_extra_ids=0, num_reserved_ids=999, mask_id=103)
    objective = obj.make_objective("bert_mlm", bert_vocab)
    rng = np.random.default_rng(0)
    weights, outcomes = [], []
    for seed in range(1000):
        tokens = (text(511, seed) % 29000 + 1000).astype(np.int32)
        example = objective(tokens, rng)
        selected = example["mlm_weights"] == 1.0
        assert example["mlm_weights"].dtype == np.float32
        np.testing.assert_array_equal(example["mlm_targets"][selected], tokens[selected])
        assert (example["mlm_targets"][~selected] == 0).all()
        np.testing.assert_array_equal(example["inputs"][~selected], tokens[~selected])
        chosen = example["inputs"][selected]
        outcomes.append(np.select([chosen == 103, chosen == tokens[selected]], [0, 2], 1))
        weights.append(example["mlm_weights"].mean())
    outcomes = np.concatenate(outcomes)
    assert abs(np.mean(weights) - 0.15) < 0.01
    np.testing.assert_allclose(np.bincount(outcomes) / outcomes.size, [0.8, 0.1, 0.1], atol=0.01)


# ---------------------------------------------------------------- drop, deshuffle, prefix LM, LM


def test_drop_tokens_interleave_back():
    objective = obj.make_objective("iid_15_d_d", VOCAB)
    rates = []
    for seed in range(500):
        tokens = text(511, seed)
        example = objective(tokens, np.random.default_rng(seed))
        mask = objective.noise_mask(tokens.size, np.random.default_rng(seed))  # the same first draw
        rebuilt = np.empty_like(tokens)
        rebuilt[~mask], rebuilt[mask] = example["inputs"], example["targets"]
        np.testing.assert_array_equal(rebuilt, tokens)
        rates.append(len(example["targets"]) / tokens.size)
    assert abs(np.mean(rates) - 0.15) < 0.01


def test_deshuffling():
    objective = obj.make_objective("all_permute", VOCAB)
    for seed in range(50):
        tokens = text(511, seed)
        example = objective(tokens, np.random.default_rng(seed))
        np.testing.assert_array_equal(example["targets"], tokens)
        np.testing.assert_array_equal(np.sort(example["inputs"]), np.sort(tokens))
        assert (example["inputs"] != tokens).mean() > 0.9


@pytest.mark.parametrize("target_fraction", [0.5, 0.25, 0.75])
def test_prefix_lm_split(target_fraction):
    objective = obj.PrefixLM(target_fraction=target_fraction)
    rng = np.random.default_rng(0)
    tokens = text(511)
    fractions, prefixes = [], []
    for _ in range(2000):
        example = objective(tokens, rng)
        np.testing.assert_array_equal(np.concatenate([example["inputs"], example["targets"]]), tokens)
        assert len(example["inputs"]) >= 1 and len(example["targets"]) >= 1
        fractions.append(len(example["targets"]) / tokens.size)
        prefixes.append(len(example["inputs"]))
    assert abs(np.mean(fractions) - target_fraction) < 0.02
    if target_fraction == 0.5:  # T5's prefix_lm: prefix length uniform on [1, L - 1]
        assert min(prefixes) <= 5 and max(prefixes) >= 505
    assert obj.make_objective("prefix_lm", VOCAB) == obj.PrefixLM()


def test_language_model():
    tokens = text(100)
    example = obj.make_objective("lm", VOCAB)(tokens, np.random.default_rng(0))
    assert example["inputs"].shape == (0,) and example["inputs"].dtype == tokens.dtype
    np.testing.assert_array_equal(example["targets"], tokens)


# ---------------------------------------------------------------- UL2


def make_ul2(**kwargs):
    return obj.make_objective("ul2", VOCAB, paradigm_tokens=PARADIGM, inputs_length=512, targets_length=512, **kwargs)


def test_ul2_denoisers_and_paradigm_tokens():
    ul2 = make_ul2()
    assert [(d.mode, d.mean_noise_span_length, d.noise_density) for d in ul2.denoisers] == [
        ("R", 3, 0.15), ("R", 8, 0.15), ("S", None, 0.25),
        ("X", 3, 0.5), ("X", 8, 0.5), ("X", 64, 0.15), ("X", 64, 0.5),
    ]
    raw_length = ul2.required_raw_length({"inputs": 512, "targets": 512})
    assert raw_length == max(ul2.raw_length(i) for i in range(7)) == obj.span_corruption_input_length(511, 0.5, 64)[0]
    rng = np.random.default_rng(0)
    modes, r_target_lengths, s_fractions = [], [], []
    for seed in range(2100):
        tokens = text(raw_length, seed % 50)
        example = ul2(tokens, rng)
        mode = {11: "R", 12: "S", 13: "X"}[int(example["inputs"][0])]
        body = example["inputs"][1:]
        modes.append(mode)
        assert len(example["targets"]) + 1 <= 512
        if mode == "S":
            rebuilt = np.concatenate([body, example["targets"]])
            np.testing.assert_array_equal(rebuilt, tokens[: len(rebuilt)])
            s_fractions.append(len(example["targets"]) / ul2.raw_length(2))
        else:
            assert len(example["inputs"]) + 1 in (511, 512)  # paradigm token + span corruption + EOS
            filled = fill_sentinels(body, example["targets"])
            np.testing.assert_array_equal(filled, tokens[: len(filled)])
            if mode == "R":
                r_target_lengths.append(len(example["targets"]))
    counts = {m: modes.count(m) / len(modes) for m in "RSX"}
    assert abs(counts["R"] - 2 / 7) < 0.03 and abs(counts["S"] - 1 / 7) < 0.03 and abs(counts["X"] - 4 / 7) < 0.03
    assert abs(np.mean(s_fractions) - 0.25) < 0.02  # S-denoiser: about a quarter of the text is the target
    # The two R-denoisers (mean span 3 and 8) have exact, different target lengths, drawn equally often.
    assert sorted(set(r_target_lengths)) == [99, 113]
    assert abs(r_target_lengths.count(113) / len(r_target_lengths) - 0.5) < 0.06


def test_ul2_rates_and_validation():
    ul2 = make_ul2(rates=[4, 0, 1, 0, 0, 0, 0])
    rng = np.random.default_rng(0)
    picks = np.bincount([ul2.sample_denoiser(rng) for _ in range(5000)], minlength=7) / 5000
    np.testing.assert_allclose(picks, [0.8, 0, 0.2, 0, 0, 0, 0], atol=0.02)
    only_s = make_ul2(rates=[0, 0, 1, 0, 0, 0, 0])
    assert only_s(text(1004), rng)["inputs"][0] == PARADIGM["S"]
    multi_token = {"R": [7, 8], "S": 9, "X": [10, 11, 12]}
    multi = obj.make_objective("ul2", VOCAB, paradigm_tokens=multi_token, inputs_length=512)
    for seed in range(30):
        example = multi(text(1004, seed), rng)
        assert example["inputs"][0] in (7, 9, 10) and len(example["inputs"]) <= 511
    with pytest.raises(ValueError, match="built for"):
        ul2.required_raw_length({"inputs": 1024, "targets": 512})
    with pytest.raises(ValueError, match="paradigm"):
        obj.MixtureOfDenoisers(VOCAB, {"R": 1, "X": 2}, inputs_length=512)
    with pytest.raises(ValueError, match="rates"):
        make_ul2(rates=[1, 2])
    # One error with the length every denoiser fits in (X_8_0.5 needs the most), not one denoiser at a time.
    with pytest.raises(ValueError, match=r"^ul2: inputs length 512 needs a targets length of at least 511 \(denoiser "
                                         r"X_8_0.5 corrupts the most text\), got 114"):
        obj.MixtureOfDenoisers(VOCAB, PARADIGM, inputs_length=512, targets_length=114)
    obj.MixtureOfDenoisers(VOCAB, PARADIGM, inputs_length=512, targets_length=511)


# ---------------------------------------------------------------- all objectives


def all_objectives():
    return [obj.make_objective(name, VOCAB) for name in obj.OBJECTIVE_NAMES if name != "ul2"] + [make_ul2()]


@pytest.mark.parametrize("objective", all_objectives(), ids=lambda o: o.name)
def test_determinism_and_dtype(objective):
    tokens = text(objective.required_raw_length({"inputs": 512, "targets": 512}))
    first = objective(tokens, np.random.default_rng(123))
    again = objective(tokens, np.random.default_rng(123))
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert first["inputs"].dtype == np.int32
    # What it says it makes (the pipeline checks the model reads exactly these) is what it fills.
    assert {k for k, v in first.items() if v.size} == set(objective.features)
    if objective.name != "lm":
        others = [objective(tokens, np.random.default_rng(seed)) for seed in range(5)]
        assert any(not np.array_equal(o["inputs"], first["inputs"]) for o in others)


@pytest.mark.parametrize("objective", all_objectives(), ids=lambda o: o.name)
@pytest.mark.parametrize("length", [0, 1, 2, 3])
def test_very_short_texts(objective, length):
    tokens = text(length)
    example = objective(tokens, np.random.default_rng(0))
    assert all(v.ndim == 1 for v in example.values())
    if not objective.name.startswith("span_"):
        return
    if length == 0:
        assert example["inputs"].size == example["targets"].size == 0
    elif length == 1:  # never noise (T5); the targets hold just the closing sentinel
        assert example["inputs"].tolist() == tokens.tolist() and example["targets"].tolist() == [32099]
    else:  # round(length * 0.15) = 0 noise tokens, clipped to one noise token in one span
        assert is_sentinel(example["inputs"]).sum() == 1
        np.testing.assert_array_equal(fill_sentinels(example["inputs"], example["targets"]), tokens)


def test_registry_and_input_checks():
    expected = {"span_2_15_u_u", "span_3_15_u_u", "span_5_15_u_u", "span_10_15_u_u", "iid_10_u_u", "iid_15_u_u",
                "iid_25_u_u", "iid_50_u_u", "iid_15_r10s90_f", "iid_15_m_f", "iid_15_d_d", "prefix_lm",
                "all_permute", "lm", "bert_mlm", "ul2"}
    assert expected <= set(obj.OBJECTIVE_NAMES)
    for name in obj.OBJECTIVE_NAMES:
        if name != "ul2":
            assert obj.make_objective(name, VOCAB).name == name
    with pytest.raises(ValueError, match="unknown objective"):
        obj.make_objective("span_4_15_u_u", VOCAB)
    with pytest.raises(ValueError, match="1-D integer"):
        obj.make_objective("span_3_15_u_u", VOCAB)(np.zeros((2, 3), np.int32), np.random.default_rng(0))


def test_ul2_span_sentinels_never_reuse_a_paradigm_token():
    # The bundled task borrows the lowest three sentinels as [NLU]/[S2S]/[NLG]; at 1024 input tokens the
    # X-denoiser (mean span 3, rate 0.5) marks about 170 spans, past the 97 sentinels left.
    paradigm = {m: VOCAB.vocab_size - 1 - n for m, n in {"R": 97, "S": 98, "X": 99}.items()}
    ul2 = obj.make_objective("ul2", VOCAB, paradigm_tokens=paradigm, inputs_length=1024, targets_length=1024,
                             rates=[0, 0, 0, 1, 0, 0, 0])
    rng = np.random.default_rng(0)
    example = ul2(text(ul2.required_raw_length({"inputs": 1024, "targets": 1024})), rng)
    body = np.concatenate([example["inputs"][1:], example["targets"]])
    assert example["inputs"][0] == paradigm["X"] and not np.isin(body, list(paradigm.values())).any()
    assert (body == VOCAB.vocab_size - 1 - 96).sum() > 2  # spans past the 97th reuse <extra_id_96>
    with pytest.raises(ValueError, match="<extra_id_0>"):
        obj.make_objective("ul2", VOCAB, paradigm_tokens={"R": VOCAB.vocab_size - 1, "S": 5, "X": 6},
                           inputs_length=64)
