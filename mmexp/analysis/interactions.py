"""Whether a model uses cross-modal interactions: EMAP and partial information decomposition.

* :class:`EMAPAnalysis`: the empirical multimodally-additive projection of the model
  (Hessel & Lee, EMNLP 2020) and its accuracy next to the model's; the gap is the part of
  the accuracy that needs interactions (:mod:`mmexp.analysis.emap`).
* :class:`PIDAnalysis`: redundancy, uniqueness and synergy in bits (Liang et al., NeurIPS
  2023; :mod:`mmexp.analysis.pid`) of the data set (discretised encoder features and the
  labels) and of the model (the same features and its predictions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmexp.analysis.data import AnalysisSet
from mmexp.analysis.discretize import discretize_with_info
from mmexp.analysis.emap import emap_report, resolve_groups
from mmexp.analysis.pid import PIDSolverError, pid_from_samples


def check_two_modalities(name: str, modalities: Sequence[str]) -> None:
    """Refuse a unimodal model: the analysis is about interactions between modalities.

    Raises:
        ValueError: Fewer than two modalities.
    """
    if len(modalities) < 2:
        raise ValueError(
            f"analysis {name} needs two modalities (it measures how they interact); the "
            f"checkpoint has {list(modalities)}"
        )


def classification_labels(name: str, analysis: AnalysisSet) -> None:
    """Refuse targets that are not class indices.

    Raises:
        ValueError: Multi-label or real-valued targets.
    """
    labels = analysis.labels
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(
            f"analysis {name} scores single-label classification; this checkpoint's targets "
            "are multi-label or real values"
        )


class EMAPAnalysis:
    """The model's accuracy and its EMAP projection's, on a seeded subsample of the test set.

    Args:
        max_samples: Samples whose every text-image pairing is scored (``max_samples^2``
            evaluations of the fusion and head); ``None``: the whole analysis set.
        seed: Seed of that subsample.
        groups: For more than two modalities, the two groups projected additively against
            each other (interactions within a group are kept).
    """

    name = "emap"

    def __init__(
        self,
        max_samples: int | None = 1000,
        seed: int = 0,
        groups: Sequence[Sequence[str]] | None = None,
    ) -> None:
        self.max_samples = max_samples
        self.seed = seed
        self.groups = [list(g) for g in groups] if groups else None

    def check(self, modalities: Sequence[str]) -> None:
        """Refuse modalities the projection is not defined for, before any compute.

        Raises:
            ValueError: Fewer than two modalities, or ``groups`` that do not split them.
        """
        check_two_modalities(self.name, modalities)
        resolve_groups(list(modalities), self.groups)

    def run(self, analysis: AnalysisSet) -> dict[str, Any]:
        """The EMAP report (JSON-ready)."""
        self.check(analysis.modalities)
        classification_labels(self.name, analysis)
        report = emap_report(
            analysis.features,
            analysis.predict,
            analysis.labels,
            analysis.batch_size,
            max_samples=self.max_samples,
            seed=self.seed,
            groups=self.groups,
        )
        # The rows drawn are kept as a count and seed; the full list would bloat the file.
        report["indices"] = len(report["indices"])
        return report


class PIDAnalysis:
    """PID of the data set and of the model on discretised encoder features.

    Each modality's pooled encoder features are clustered (k-means, seeded) into
    ``n_clusters`` codes; the data set's PID takes the labels as target, the model's its
    predicted classes (as Liang et al. do to quantify the interactions a model captures).

    Args:
        n_clusters: Codes per modality (the estimator's joint has
            ``n_clusters^2 x classes`` cells).
        seed: Seed of the clustering.
        modalities: The two modalities decomposed; ``None``: the model's two (refused
            for more than two).
        pca_components: Reduce the features to this many components before clustering
            (the authors' setting for real data); ``None`` keeps them.
        solver: The CVXPY conic solver.
        solver_options: Keyword arguments of the solver (``max_iters``, tolerances), as
            CVXPY's ``Problem.solve`` takes them.
    """

    name = "pid"

    def __init__(
        self,
        n_clusters: int = 20,
        seed: int = 0,
        modalities: Sequence[str] | None = None,
        pca_components: int | None = None,
        solver: str = "CLARABEL",
        solver_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.seed = seed
        self.modalities = list(modalities) if modalities else None
        self.pca_components = pca_components
        self.solver = solver
        self.solver_options = dict(solver_options or {})

    def check(self, modalities: Sequence[str]) -> None:
        """Refuse modalities that do not make one pair, before any compute.

        Raises:
            ValueError: See :meth:`pair`.
        """
        self.pair(modalities)

    def pair(self, modalities: Sequence[str]) -> list[str]:
        """The two modalities decomposed.

        Raises:
            ValueError: More than two modalities without a choice, or an unknown one.
        """
        check_two_modalities(self.name, modalities)
        if self.modalities is None:
            if len(modalities) > 2:
                raise ValueError(
                    f"analysis pid decomposes two modalities; the checkpoint has "
                    f"{list(modalities)}: set analysis.pid.modalities=[a,b]"
                )
            return list(modalities)
        if len(self.modalities) != 2 or not set(self.modalities) <= set(modalities):
            raise ValueError(
                f"analysis.pid.modalities={self.modalities} must name two of {list(modalities)}"
            )
        return self.modalities

    def run(self, analysis: AnalysisSet) -> dict[str, Any]:
        """The PID report of the data set and of the model (JSON-ready).

        Raises:
            ValueError: See :meth:`pair`; targets that are not class indices.
            PIDSolverError: The solver did not reach the optimum (its status named).
        """
        pair = self.pair(analysis.modalities)
        classification_labels(self.name, analysis)
        codes, records = [], {}
        for modality in pair:
            pooled = analysis.features[modality].pooled.float().cpu().numpy()
            found = discretize_with_info(
                pooled, self.n_clusters, self.seed, pca_components=self.pca_components
            )
            codes.append(found.labels)
            records[modality] = found.record()
        labels = analysis.labels.cpu().numpy().astype(np.int64)
        predicted = analysis.model_outputs().argmax(dim=1).cpu().numpy().astype(np.int64)
        classes = int(max(labels.max(), predicted.max())) + 1
        sizes = (self.n_clusters, self.n_clusters, classes)
        result = {}
        for target, values in (("data", labels), ("model", predicted)):
            try:
                pid = pid_from_samples(
                    codes[0],
                    codes[1],
                    values,
                    sizes=sizes,
                    solver=self.solver,
                    solver_options=self.solver_options,
                )
            except PIDSolverError as error:
                raise PIDSolverError(
                    error.status,
                    f"{error.detail} (the {target}'s PID; analysis.pid.solver={self.solver}, "
                    f"analysis.pid.solver_options={self.solver_options})",
                ) from error
            entry = pid.as_dict()
            entry[f"unique_{pair[0]}"] = entry.pop("unique_1")
            entry[f"unique_{pair[1]}"] = entry.pop("unique_2")
            result[target] = entry
        return {"modalities": pair, "discretization": records, **result}
