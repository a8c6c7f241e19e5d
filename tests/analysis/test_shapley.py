"""Shapley values over modalities against the axioms and independent computations."""

from __future__ import annotations

import json
from itertools import combinations, permutations

import pytest
import torch

from mmexp.analysis.shapley import (
    chance_accuracy,
    per_sample_as_dict,
    per_sample_shapley,
    shapley_from_subsets,
    subsets_as_dict,
)
from mmexp.encoders.base import EncoderOutput
from mmexp.fusion import LateFusion

N, DIM, CLASSES = 8, 4, 3
TOL = {"atol": 1e-5, "rtol": 1e-5}
ABC = ("a", "b", "c")


def all_subsets(players) -> list[frozenset[str]]:
    return [frozenset(s) for k in range(len(players) + 1) for s in combinations(players, k)]


def random_values(players, seed: int = 0) -> dict[frozenset[str], float]:
    generator = torch.Generator().manual_seed(seed)
    return {s: float(torch.rand(1, generator=generator)) for s in all_subsets(players)}


def permutation_average(value, players) -> dict[str, float]:
    """Mean marginal contribution of each player over every order of arrival."""
    totals = dict.fromkeys(players, 0.0)
    orders = list(permutations(players))
    for order in orders:
        coalition: frozenset[str] = frozenset()
        for player in order:
            totals[player] += value(coalition | {player}) - value(coalition)
            coalition = coalition | {player}
    return {p: total / len(orders) for p, total in totals.items()}


def test_efficiency_and_permutation_average_for_three_players() -> None:
    values = random_values(ABC)
    phi = shapley_from_subsets(values, ABC)
    assert sum(phi.values()) == pytest.approx(values[frozenset(ABC)] - values[frozenset()])
    expected = permutation_average(values.__getitem__, ABC)
    assert phi == pytest.approx(expected)


def test_two_player_closed_form() -> None:
    v0, v1, v2, v12 = 0.25, 0.6, 0.4, 0.9
    values = {frozenset(["x"]): v1, frozenset(["y"]): v2, frozenset(["x", "y"]): v12}
    phi = shapley_from_subsets(values, ["x", "y"], empty=v0)
    assert phi["x"] == pytest.approx(((v1 - v0) + (v12 - v2)) / 2)
    assert phi["y"] == pytest.approx(((v2 - v0) + (v12 - v1)) / 2)


def test_symmetry_and_null_player() -> None:
    # Depends on how many of a and b are present, not on which; c adds nothing.
    def value(subset: frozenset[str]) -> float:
        return [0.1, 0.5, 0.7][len(subset & {"a", "b"})]

    phi = shapley_from_subsets({s: value(s) for s in all_subsets(ABC)}, ABC)
    assert phi["a"] == pytest.approx(phi["b"]) and phi["a"] == pytest.approx(0.3)
    assert phi["c"] == 0.0


def test_empty_coalition_must_be_given_once_and_subsets_complete() -> None:
    values = random_values(["a", "b"])
    with pytest.raises(ValueError, match="given twice"):
        shapley_from_subsets(values, ["a", "b"], empty=0.5)
    without = {s: v for s, v in values.items() if s}
    with pytest.raises(ValueError, match="chance_accuracy"):
        shapley_from_subsets(without, ["a", "b"])
    with pytest.raises(ValueError, match=r"lack the subsets \[\['b'\]\]"):
        shapley_from_subsets({s: v for s, v in without.items() if s != {"b"}}, ["a", "b"], empty=0)
    with pytest.raises(ValueError, match="outside"):
        shapley_from_subsets({**values, frozenset(["z"]): 1.0}, ["a", "b"])


def test_more_than_four_modalities_are_refused() -> None:
    players = ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match=r"2\^5 = 32 coalitions; at most 4 modalities"):
        shapley_from_subsets(random_values(players), players)
    features = {m: output(m_seed) for m_seed, m in enumerate(players)}
    with pytest.raises(ValueError, match="at most 4"):
        per_sample_shapley(features, lambda f: torch.zeros(N, CLASSES))
    assert len(shapley_from_subsets(random_values(players[:4]), players[:4])) == 4


def test_chance_accuracy_is_the_majority_class_share() -> None:
    assert chance_accuracy(torch.tensor([0, 2, 2, 1, 2, 0])) == pytest.approx(0.5)
    assert chance_accuracy([1, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="integer class labels"):
        chance_accuracy(torch.rand(4, 2))


def test_subsets_as_dict_is_json_ready() -> None:
    values = {s: v for s, v in random_values(["a", "b"]).items() if s}
    phi = shapley_from_subsets(values, ["a", "b"], empty=0.3)
    report = json.loads(json.dumps(subsets_as_dict(values, phi, empty=0.3)))
    assert report["values"]["none"] == 0.3 and set(report["values"]) == {"none", "a", "b", "a+b"}
    assert report["total"] == pytest.approx(values[frozenset("ab")] - 0.3)


# Per-sample values on features: predict reads each modality only where it is present.


def output(seed: int, present=None, n: int = N) -> EncoderOutput:
    generator = torch.Generator().manual_seed(seed)
    pooled = torch.randn(n, DIM, generator=generator)
    return EncoderOutput(pooled[:, None], torch.ones(n, 1, dtype=torch.bool), pooled, present)


def weights(seed: int) -> torch.Tensor:
    return torch.randn(DIM, CLASSES, generator=torch.Generator().manual_seed(seed))


def term(features, name: str, seed: int) -> torch.Tensor:
    out = features[name]
    return torch.tanh(out.pooled @ weights(seed)) * out.present_mask()[:, None]


def interacting(features) -> torch.Tensor:
    """Main effects of a, b and c, a pair interaction of a and b and a triple one."""
    ab = term(features, "a", 1) * term(features, "b", 2)
    abc = ab * term(features, "c", 3)
    return term(features, "a", 4) + term(features, "b", 5) + 0.5 * term(features, "c", 6) + ab + abc


def three_features(present_c=None) -> dict[str, EncoderOutput]:
    return {"a": output(0), "b": output(1), "c": output(2, present_c)}


def coalition_value(features, predict, i: int, coalition, target: int, base: float) -> float:
    """One sample's target logit with only ``coalition`` (of what it has) present."""
    keep = {m: bool(coalition & {m}) and bool(f.present_mask()[i]) for m, f in features.items()}
    if not any(keep.values()):
        return base
    single = {
        m: EncoderOutput(
            f.tokens[i : i + 1], f.mask[i : i + 1], f.pooled[i : i + 1], torch.tensor([keep[m]])
        )
        for m, f in features.items()
    }
    return float(predict(single)[0, target])


@pytest.mark.parametrize("baseline", ["mean", "zero"])
def test_per_sample_values_match_the_permutation_average(baseline: str) -> None:
    present_c = torch.ones(N, dtype=torch.bool)
    present_c[[1, 5]] = False  # these samples lack c
    features = three_features(present_c)
    phi, shares = per_sample_shapley(features, interacting, ABC, batch_size=3, baseline=baseline)
    full = interacting(features)
    target = full.argmax(dim=1)
    base = full.mean(dim=0) if baseline == "mean" else torch.zeros(CLASSES)
    for i in range(N):
        c, b = int(target[i]), float(base[target[i]])
        expected = permutation_average(
            lambda s, i=i, c=c, b=b: coalition_value(features, interacting, i, s, c, b), ABC
        )
        assert phi[i].tolist() == pytest.approx([expected[m] for m in ABC], abs=1e-5)
    # Efficiency: each row sums to the target logit minus the baseline's.
    torch.testing.assert_close(
        phi.sum(dim=1), full.gather(1, target[:, None]).squeeze(1) - base[target], **TOL
    )
    assert (phi[[1, 5], 2] == 0).all()  # a modality a sample lacks is a null player
    assert sum(shares.values()) == pytest.approx(1.0)


def test_per_sample_null_player_symmetry_and_closed_form() -> None:
    twin = output(0)
    features = {"a": twin, "b": twin, "c": output(2)}

    uninformed = torch.tensor([0.3, -0.2, 0.1])  # the output with nothing it reads present

    def symmetric_ignoring_c(f):
        return uninformed + term(f, "a", 1) + term(f, "b", 1) + term(f, "a", 2) * term(f, "b", 2)

    # c is a null player of the game when the empty coalition is worth what the model
    # outputs from c alone, i.e. its uninformed output.
    phi, shares = per_sample_shapley(features, symmetric_ignoring_c, baseline=uninformed)
    assert (phi[:, 2] == 0).all()
    torch.testing.assert_close(phi[:, 0], phi[:, 1])
    assert shares["c"] == 0.0 and shares["a"] == pytest.approx(0.5)
    # Another baseline hands c a third of the gap between that output and the baseline.
    mean_phi, _ = per_sample_shapley(features, symmetric_ignoring_c, baseline="mean")
    full = symmetric_ignoring_c(features)
    target = full.argmax(dim=1)
    gap = uninformed[target] - full.mean(dim=0)[target]
    torch.testing.assert_close(mean_phi[:, 2], gap / 3, **TOL)
    torch.testing.assert_close(mean_phi[:, 0], mean_phi[:, 1])

    pair = {"a": twin, "b": output(3)}
    full = interacting({**pair, "c": output(2, torch.zeros(N, dtype=torch.bool))})
    target = full.argmax(dim=1)
    rows = torch.arange(N)

    def predict(f):
        return interacting({**f, "c": output(2, torch.zeros(len(f["a"].pooled), dtype=torch.bool))})

    phi, _ = per_sample_shapley(pair, predict, baseline="zero")
    v1 = term(pair, "a", 4)[rows, target]
    v2 = term(pair, "b", 5)[rows, target]
    v12 = full[rows, target]
    torch.testing.assert_close(phi[:, 0], ((v1 - 0) + (v12 - v2)) / 2, **TOL)


def test_baselines_shares_and_json() -> None:
    features = three_features()
    given = torch.tensor([0.5, -1.0, 2.0])
    phi, shares = per_sample_shapley(features, interacting, baseline=given)
    full = interacting(features)
    target = full.argmax(dim=1)
    torch.testing.assert_close(phi.sum(dim=1), full.max(dim=1).values - given[target], **TOL)
    manual = (phi.abs() / phi.abs().sum(dim=1, keepdim=True)).mean(dim=0)
    assert list(shares.values()) == pytest.approx(manual.tolist())
    labels = torch.zeros(N, dtype=torch.long)
    explained, _ = per_sample_shapley(features, interacting, target=labels, baseline="zero")
    torch.testing.assert_close(explained.sum(dim=1), full[:, 0], **TOL)
    report = json.loads(json.dumps(per_sample_as_dict(phi, shares, ABC)))
    assert (
        report["n"] == N
        and report["samples_with_shares"] == N
        and set(report["shares"]) == set(ABC)
    )
    with pytest.raises(ValueError, match="baseline must be one of"):
        per_sample_shapley(features, interacting, baseline="median")
    with pytest.raises(ValueError, match="must be those of the features"):
        per_sample_shapley(features, interacting, ["a", "b"])


def test_real_late_fusion_with_a_missing_modality() -> None:
    torch.manual_seed(0)
    fusion = LateFusion(
        ["a", "b"], dim=DIM, num_classes=CLASSES, hidden_dims=(8,), dropout=0.0
    ).eval()
    present_b = torch.ones(N, dtype=torch.bool)
    present_b[0] = False
    features = {"a": output(0), "b": output(1, present_b)}
    phi, shares = per_sample_shapley(features, fusion, batch_size=4)
    with torch.no_grad():
        full = fusion(features)
    target = full.argmax(dim=1)
    base = full.mean(dim=0)[target]
    torch.testing.assert_close(phi.sum(dim=1), full.max(dim=1).values - base, **TOL)
    assert phi[0, 1] == 0.0
    assert all(0.0 <= share <= 1.0 for share in shares.values())
