"""What each modality contributes to a model's test performance and to each prediction.

* the metrics with each non-empty subset of the modalities present (the others marked
  absent, as the robustness grid's ``subset:`` conditions);
* per-modality drop deltas: the full model's metric minus the metric with that modality
  absent;
* exact Shapley values of the primary metric over the modalities (``2^M`` subsets,
  ``M <= 4``), summing to the full model's metric minus the empty coalition's. A model with
  no modality cannot be scored, so the empty coalition is the prior: the metric of a
  constant prediction of the label distribution of the set (the log class frequencies; the
  mean target of a regression), the best any input-free predictor does;
* per sample, modality-level MM-SHAP (Parcalabescu & Frank, ACL 2023): the Shapley values
  of the predicted-class logit over the modalities and each modality's share
  ``|phi_m| / sum_k |phi_k|``, averaged over the samples (classification only).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from mmexp.analysis.data import AnalysisSet
from mmexp.analysis.shapley import (
    check_players,
    per_sample_as_dict,
    per_sample_shapley,
    shapley_from_subsets,
)
from mmexp.lit.presence import mark_absent


def prior_outputs(analysis: AnalysisSet, like: torch.Tensor) -> torch.Tensor:
    """The constant prediction of the label distribution, shaped like the model's outputs.

    Single-label classification: the log class frequencies (a class never seen gets a
    large negative logit); multi-label: each label's log odds; regression: the mean target.
    """
    labels = analysis.labels.to(like.device)
    if labels.dim() == 1 and like.dim() == 2 and like.shape[1] > 1:
        counts = torch.bincount(labels.long(), minlength=like.shape[1]).to(like.dtype)
        prior = (counts / counts.sum()).clamp_min(1e-12).log()
    elif labels.dim() == 2:  # multi-hot targets
        rate = labels.to(like.dtype).mean(dim=0).clamp(1e-6, 1 - 1e-6)
        prior = (rate / (1 - rate)).log()
    else:
        prior = labels.to(like.dtype).mean().reshape(like.shape[1:])
    return prior.expand_as(like).clone()


def subset_label(subset: frozenset[str] | tuple[str, ...]) -> str:
    """``image+text``; ``none`` for the empty subset."""
    return "+".join(sorted(subset)) or "none"


class ModalityContribution:
    """Subset metrics, drop deltas, Shapley values and per-sample MM-SHAP shares.

    Args:
        metric: The metric Shapley values are computed on; ``None``: the module's monitored
            metric (``acc`` for classification).
        per_sample: Also compute the per-sample Shapley values of the predicted-class logit
            and their MM-SHAP shares (classification outputs only).
        baseline: The empty coalition of the per-sample values: ``mean`` (the mean logit of
            the set) or ``zero``.
    """

    name = "contribution"

    def __init__(
        self, metric: str | None = None, per_sample: bool = True, baseline: str = "mean"
    ) -> None:
        self.metric = metric
        self.per_sample = per_sample
        self.baseline = baseline

    def check(self, modalities: list[str]) -> None:
        """Refuse more modalities than exact Shapley values support, before any compute.

        Raises:
            ValueError: See :func:`~mmexp.analysis.shapley.check_players`.
        """
        check_players(modalities)

    def run(self, analysis: AnalysisSet) -> dict[str, Any]:
        """The contribution report of the set (JSON-ready).

        Raises:
            ValueError: More modalities than the exact computation supports, or a metric the
                module does not compute.
        """
        players = check_players(analysis.modalities)
        full = analysis.model_outputs()
        metric = self.metric or primary(analysis.module.monitor)
        subsets: dict[frozenset[str], dict[str, float]] = {}
        for size in range(1, len(players) + 1):
            for kept in itertools.combinations(players, size):
                outputs = full if size == len(players) else self._with_only(analysis, kept)
                subsets[frozenset(kept)] = analysis.metrics(outputs)
        empty = analysis.metrics(prior_outputs(analysis, full))
        if metric not in empty:
            raise ValueError(
                f"analysis.contribution.metric={metric!r} is not a test metric of the model; "
                f"choose one of {sorted(empty)}"
            )
        values = {subset: scores[metric] for subset, scores in subsets.items()}
        shapley = shapley_from_subsets(values, players, empty=empty[metric])
        everything = frozenset(players)
        report: dict[str, Any] = {
            "metric": metric,
            "subsets": {subset_label(s): scores for s, scores in subsets.items()},
            "empty": empty,
            "drop": {
                m: values[everything] - values[everything - {m}] if len(players) > 1 else None
                for m in players
            },
            "shapley": shapley,
            "shapley_total": sum(shapley.values()),
            "full_minus_empty": values[everything] - empty[metric],
        }
        if self.per_sample and full.dim() == 2 and full.shape[1] > 1:
            phi, shares = per_sample_shapley(
                analysis.features,
                analysis.predict,
                players,
                batch_size=analysis.batch_size,
                baseline=self.baseline,
            )
            report["per_sample"] = {
                **per_sample_as_dict(phi, shares, players),
                "baseline": self.baseline,
            }
        return report

    @staticmethod
    def _with_only(analysis: AnalysisSet, kept: tuple[str, ...]) -> torch.Tensor:
        count = len(analysis.labels)
        marked = {
            m: mark_absent(output, torch.full((count,), m in kept))
            for m, output in analysis.features.items()
        }
        return analysis.score_rows(marked)


def primary(monitor: str) -> str:
    """The monitored metric without its split: ``val/acc`` -> ``acc``."""
    return monitor.split("/", 1)[1] if "/" in monitor else monitor
