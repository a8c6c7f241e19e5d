"""Exact Shapley values with modalities as players.

Two uses:

* :func:`shapley_from_subsets` splits a metric of the model with every modality present
  between the modalities, from the metric with each subset present (the robustness grid of
  missing modalities measures these). The empty coalition has no model to score in mmexp (a
  sample must keep one modality), so its value is given explicitly; :func:`chance_accuracy`
  is the choice for accuracy.
* :func:`per_sample_shapley` is a modality-level MM-SHAP (Parcalabescu and Frank, "MM-SHAP:
  A Performance-agnostic Metric for Measuring Multimodal Contributions in Vision and
  Language Models and Tasks", ACL 2023): Shapley values of the logit of each sample's
  predicted class, and each modality's share ``|φ_m| / Σ_k |φ_k|``, averaged over samples.

Differences from MM-SHAP's own implementation: its players are text tokens and image
patches, removed by replacing token ids and blacking out patches, so even the empty
coalition is a real (blank) input, and SHAP's explainers estimate the values by sampling.
Here the players are whole modalities, removed the way the model handles missing data
(``present=False``), and the values are exact over all ``2^M`` coalitions. A model cannot
be scored with no modality, so the empty coalition takes a baseline (see
:func:`baseline_logits`) where MM-SHAP scores the blank input. A share from the modality's
total ``|φ_m|`` is at most MM-SHAP's sum of per-token ``|φ|`` (tokens of opposite sign
cancel), so the two shares are not numerically interchangeable.

Exact values cost ``2^M`` evaluations, hence at most :data:`MAX_PLAYERS` modalities.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from math import factorial
from typing import Any

import torch

from mmexp.analysis.rows import Features, Predict, num_samples, predict_rows
from mmexp.fusion.layers import presence
from mmexp.lit.presence import mark_absent

MAX_PLAYERS = 4


def check_players(modalities: Iterable[str]) -> list[str]:
    """The modalities as a list of distinct players, at most :data:`MAX_PLAYERS`.

    Raises:
        ValueError: No modality, a repeated one, or more than :data:`MAX_PLAYERS`.
    """
    players = list(modalities)
    if not players:
        raise ValueError("Shapley values need at least one modality")
    if len(set(players)) != len(players):
        raise ValueError(f"modalities must be distinct, got {players}")
    if len(players) > MAX_PLAYERS:
        raise ValueError(
            f"exact Shapley values over {len(players)} modalities need 2^{len(players)} = "
            f"{2 ** len(players)} coalitions; at most {MAX_PLAYERS} modalities "
            f"({2**MAX_PLAYERS} coalitions) are supported"
        )
    return players


def coalitions(players: Sequence[str]) -> list[frozenset[str]]:
    """Every subset of ``players``, the empty one first, by increasing size."""
    by_size = (combinations(players, size) for size in range(len(players) + 1))
    return [frozenset(subset) for group in by_size for subset in group]


def weight(size: int, players: int) -> float:
    """Shapley weight ``|S|! (M − |S| − 1)! / M!`` of a coalition of ``size`` without ``i``."""
    return factorial(size) * factorial(players - size - 1) / factorial(players)


def chance_accuracy(labels: torch.Tensor | Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent class: the empty coalition's value.

    A model that sees no input outputs one constant distribution; trained, it fits the
    class prior, whose most likely class is right on the majority-class share of samples,
    the best any input-free classifier does. Uniform guessing (``1 / C``) is what a random
    guesser expects, not a trained model: on an imbalanced set it would set the empty
    coalition too low and credit the modalities with the label imbalance.

    Args:
        labels: ``[N]`` class indices of the samples the metric is computed on.

    Raises:
        ValueError: No labels, or labels that are not one class index per sample.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() == 0 or labels.is_floating_point():
        raise ValueError(
            f"chance_accuracy needs [N] integer class labels, got shape {tuple(labels.shape)} "
            f"of {labels.dtype}"
        )
    counts = torch.unique(labels, return_counts=True)[1]
    return float(counts.max()) / labels.numel()


def shapley_from_subsets(
    values: Mapping[frozenset[str], float],
    modalities: Iterable[str],
    *,
    empty: float | None = None,
) -> dict[str, float]:
    """Exact Shapley values of a set function over modalities.

    Args:
        values: The metric with each subset of ``modalities`` present, keyed by the subset.
            The empty subset is either one of the keys or given as ``empty``.
        modalities: The players, at most :data:`MAX_PLAYERS`.
        empty: The value of the empty coalition, e.g. :func:`chance_accuracy` for accuracy
            (the model with nothing present cannot be scored).

    Returns:
        ``{modality: φ}``, summing to ``v(all) − v(∅)`` (efficiency).

    Raises:
        ValueError: See :func:`check_players`; the empty coalition's value given twice or
            not at all; a subset missing or naming an unknown modality.
    """
    players = check_players(modalities)
    table = {frozenset(key): float(value) for key, value in values.items()}
    if empty is not None:
        if frozenset() in table:
            raise ValueError("the empty coalition's value is given twice (values and empty=)")
        table[frozenset()] = float(empty)
    if frozenset() not in table:
        raise ValueError(
            "the empty coalition's value is needed (a model cannot be scored without any "
            "modality): pass empty=, e.g. chance_accuracy(labels)"
        )
    unknown = sorted(sorted(key) for key in table if not key <= set(players))
    if unknown:
        raise ValueError(f"subsets {unknown} name modalities outside {players}")
    missing = [sorted(c) for c in coalitions(players) if c not in table]
    if missing:
        raise ValueError(f"values lack the subsets {missing}")
    count = len(players)
    return {
        player: sum(
            weight(len(subset), count) * (table[subset | {player}] - table[subset])
            for subset in coalitions([p for p in players if p != player])
        )
        for player in players
    }


def baseline_logits(baseline: str | torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The ``[C]`` logits that stand for a sample's empty coalition.

    ``"mean"`` (the default) is the mean full-model logit over the set, SHAP's base value
    ``E[f(x)]`` with the set as background: a sample's values sum to how far its logit lies
    from the average one. ``"zero"`` is arbitrary, logits being defined up to a shift per
    sample. A tensor ``[C]`` is taken as is, e.g. the log class prior (the analogue of
    :func:`chance_accuracy`).

    A modality the model ignores is a null player (``φ = 0``) only when the baseline is what
    the model outputs from that modality alone, its uninformed output ``u``; with another
    baseline ``b`` it gets ``(u − b) / M``. MM-SHAP has no such gap, its empty coalition
    being the blank input. Pass ``u`` when it is known.

    Raises:
        ValueError: An unknown name or a tensor of another shape than ``[C]``.
    """
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != logits.shape[1:]:
            raise ValueError(
                f"baseline must be [C] = {list(logits.shape[1:])}, got {list(baseline.shape)}"
            )
        return baseline.to(logits)
    if baseline == "mean":
        return logits.mean(dim=0)
    if baseline == "zero":
        return torch.zeros_like(logits[0])
    raise ValueError(f"baseline must be one of ['mean', 'zero'] or a [C] tensor, got {baseline!r}")


def per_sample_shapley(
    features: Features,
    predict: Predict,
    modalities: Iterable[str] | None = None,
    *,
    batch_size: int = 256,
    baseline: str | torch.Tensor = "mean",
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-sample Shapley values of the target-class logit and MM-SHAP modality shares.

    A coalition ``S`` of a sample keeps the modalities of ``S`` the sample has and marks the
    others absent. A modality the sample lacks is thereby a null player (``φ = 0``), and a
    coalition left with no modality takes the baseline, as the empty one does.

    Args:
        features: Encoder outputs of the set, one row per sample.
        predict: Maps a feature dict to logits ``[B, C]`` (e.g. ``predict_from_features``).
        modalities: The players, exactly the modalities of ``features`` (their order is
            the column order of the result); ``None`` takes them in the order of ``features``.
        batch_size: Samples per call of ``predict``.
        baseline: The empty coalition's logits, see :func:`baseline_logits`.
        target: ``[N]`` class explained per sample; ``None`` for the predicted class.

    Returns:
        ``φ`` ``[N, M]`` and the mean MM-SHAP share of each modality (over the samples with
        some non-zero ``φ``); each row of ``φ`` sums to the sample's target logit minus the
        baseline's (efficiency).

    Raises:
        ValueError: See :func:`check_players` and :func:`baseline_logits`; modalities that
            are not those of ``features``.
    """
    players = check_players(features if modalities is None else modalities)
    if sorted(players) != sorted(features):
        raise ValueError(f"modalities {players} must be those of the features {sorted(features)}")
    n = num_samples(features)
    full = predict_rows(features, predict, torch.arange(n), batch_size)
    if target is None:
        target = full.argmax(dim=1)
    elif target.shape != (n,):
        raise ValueError(f"target must be [N] = [{n}] class indices, got {list(target.shape)}")
    target = target.to(full.device).long()
    base = baseline_logits(baseline, full)[target]
    values = coalition_values(features, predict, players, full, target, base, batch_size)
    phi = torch.zeros(n, len(players), dtype=full.dtype, device=full.device)
    for k in range(len(players)):
        for bits in range(values.shape[1]):
            if not bits >> k & 1:
                gain = values[:, bits | 1 << k] - values[:, bits]
                phi[:, k] += weight(bin(bits).count("1"), len(players)) * gain
    return phi, mean_shares(mm_shap_shares(phi), players)


def coalition_values(
    features: Features,
    predict: Predict,
    players: Sequence[str],
    full: torch.Tensor,
    target: torch.Tensor,
    base: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """``[N, 2^M]`` target logit of every sample under every coalition, a bitmask of players.

    ``full`` (the logits with every modality a sample has) is the last coalition; ``base``
    (``[N]``, the baseline at each target) stands for those left with nothing to score.
    """
    count = len(players)
    present = presence(features, players).cpu()
    values = base[:, None].repeat(1, 2**count)
    values[:, -1] = full.gather(1, target[:, None]).squeeze(1)
    for bits in range(1, 2**count - 1):
        keep = present & torch.tensor([bool(bits >> k & 1) for k in range(count)])
        index = keep.any(dim=1).nonzero().squeeze(1)
        if index.numel() == 0:
            continue
        marked = {m: mark_absent(features[m], keep[:, k]) for k, m in enumerate(players)}
        logits = predict_rows(marked, predict, index, batch_size)
        index = index.to(values.device)
        values[index, bits] = logits.gather(1, target[index, None]).squeeze(1)
    return values


def mm_shap_shares(phi: torch.Tensor) -> torch.Tensor:
    """Per-sample shares ``|φ_m| / Σ_k |φ_k|`` ``[N, M]``; NaN rows where every ``φ`` is 0."""
    total = phi.abs().sum(dim=1, keepdim=True)
    return torch.where(total > 0, phi.abs() / total.clamp_min(1e-30), torch.nan)


def mean_shares(shares: torch.Tensor, players: Sequence[str]) -> dict[str, float]:
    """The per-sample shares averaged over the samples that have them (NaN if none do)."""
    defined = ~shares.isnan().any(dim=1)
    mean = shares[defined].mean(dim=0) if defined.any() else torch.full((len(players),), torch.nan)
    return {player: float(value) for player, value in zip(players, mean, strict=True)}


def per_sample_as_dict(
    phi: torch.Tensor, shares: Mapping[str, float], players: Sequence[str]
) -> dict[str, Any]:
    """The result of :func:`per_sample_shapley` summarised, JSON-ready (NaN as ``None``)."""
    shares_by_sample = mm_shap_shares(phi)
    return {
        "modalities": list(players),
        "n": int(phi.shape[0]),
        "samples_with_shares": int((~shares_by_sample.isnan().any(dim=1)).sum()),
        "mean_phi": dict(zip(players, phi.mean(dim=0).tolist(), strict=True)),
        "mean_abs_phi": dict(zip(players, phi.abs().mean(dim=0).tolist(), strict=True)),
        "shares": {m: None if value != value else value for m, value in shares.items()},
    }


def subsets_as_dict(
    values: Mapping[frozenset[str], float], phi: Mapping[str, float], empty: float | None = None
) -> dict[str, Any]:
    """:func:`shapley_from_subsets` inputs and result, JSON-ready (subsets as ``"a+b"``).

    The empty coalition, from ``values`` or ``empty``, is keyed ``"none"``.
    """
    table = {"+".join(sorted(key)) or "none": float(v) for key, v in values.items()}
    if empty is not None:
        table["none"] = float(empty)
    return {"values": table, "shapley": dict(phi), "total": float(sum(phi.values()))}
