"""The evaluation set every analysis of a checkpoint reads: encoded once, scored on demand.

The test split is encoded once with the trained encoders; the analyses then recombine the
encoder outputs (modalities marked absent, samples paired across) and score them with the
module's fusion and head. A seeded subsample bounds the memory on large test sets: only the
chosen samples' outputs are kept, and the output says how many were drawn from how many.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics import MetricCollection

from mmexp.analysis.rows import Features, concat_features, predict_rows
from mmexp.analysis.samples import RawSamples
from mmexp.lit.presence import select_rows

TEST_PREFIX = "test/"


@dataclass
class AnalysisSet:
    """The encoded evaluation set and how to score it.

    Attributes:
        module: The trained module (a classifier or regressor), in eval mode.
        features: Encoder outputs of the kept samples, one row each.
        labels: ``[N]`` (or ``[N, C]``) targets of those samples.
        index: ``[N]`` the samples' indices in the test split.
        total: Samples in the test split.
        seed: Seed of the subsample.
        batch_size: Rows per call of the fusion and head.
        outputs: The model's own outputs on ``features`` (filled on first use).
        samples: The test samples themselves, for the analyses that need the model's
            inputs (attention and saliency figures); set by
            :func:`~mmexp.analysis.run.run_analyses`.
        output_dir: The folder of ``analysis.json``; a component writes its files under
            :meth:`files_folder`.
    """

    module: Any
    features: Features
    labels: torch.Tensor
    index: torch.Tensor
    total: int
    seed: int
    batch_size: int
    outputs: torch.Tensor | None = field(default=None, repr=False)
    samples: RawSamples | None = field(default=None, repr=False)
    output_dir: Path | None = None

    @property
    def modalities(self) -> list[str]:
        """The modalities, in the module's order."""
        return list(self.module.encoders)

    def predict(self, features: Features) -> torch.Tensor:
        """Fusion, head and output shaping on a batch of encoder outputs."""
        return self.module.predict_from_features(features)

    def score_rows(self, features: Features) -> torch.Tensor:
        """The outputs of every row of ``features`` (the set's own samples, recombined)."""
        rows = torch.arange(len(self.labels))
        return predict_rows(features, self.predict, rows, self.batch_size)

    def model_outputs(self) -> torch.Tensor:
        """The model's outputs on the set, every modality present (computed once)."""
        if self.outputs is None:
            self.outputs = self.score_rows(self.features)
        return self.outputs

    def metrics(self, outputs: torch.Tensor) -> dict[str, float]:
        """The module's test metrics of ``outputs`` against the labels, without ``test/``."""
        template: MetricCollection = self.module.test_metrics
        collection = template.clone().to(outputs.device)
        collection.update(outputs, self.labels.to(outputs.device))
        values = {k.removeprefix(TEST_PREFIX): float(v) for k, v in collection.compute().items()}
        loss = self.module.loss_fn(outputs, self.labels.to(outputs.device))
        values["loss"] = float(loss)
        return values

    def files_folder(self, component: str) -> Path:
        """Where ``component`` writes its files: ``<output_dir>/analysis/<component>``.

        Raises:
            ValueError: The set has no output folder.
        """
        if self.output_dir is None:
            raise ValueError(f"analysis {component} writes files: the set needs an output_dir")
        return Path(self.output_dir) / "analysis" / component

    def describe(self) -> dict[str, Any]:
        """How the set was drawn, for the output."""
        return {"n": len(self.labels), "total": self.total, "seed": self.seed}


def subsample(total: int, max_samples: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded subsample of ``total`` samples; ``None`` keeps them all."""
    if max_samples is None or max_samples >= total:
        return None
    if max_samples < 1:
        raise ValueError(f"analysis max_samples must be at least 1, got {max_samples}")
    chosen = np.random.default_rng(seed).choice(total, size=max_samples, replace=False)
    return np.sort(chosen)


def encode_test_set(
    module: Any,
    loader: Any,
    total: int,
    max_samples: int | None,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> AnalysisSet:
    """Encode the test split (or its seeded subsample) once with the module's encoders.

    Args:
        module: The trained module.
        loader: The test loader; its batches carry ``index`` (the sample's test index).
        total: Samples in the test split.
        max_samples: Keep at most this many samples (seeded); ``None`` keeps all.
        seed: Seed of the subsample.
        batch_size: Rows per call of the fusion and head in the analyses.
        device: Where the module runs.
    """
    chosen = subsample(total, max_samples, seed)
    wanted = None if chosen is None else torch.as_tensor(chosen)
    module = module.to(device).eval()
    batches, labels, indices = [], [], []
    with torch.no_grad():
        for batch in loader:
            keep = torch.ones(len(batch["index"]), dtype=torch.bool)
            if wanted is not None:
                keep = torch.isin(batch["index"], wanted)
                if not keep.any():
                    continue
            rows = keep.nonzero().squeeze(1)
            size = len(batch["index"])
            selected = {key: select_rows(value, rows, size) for key, value in batch.items()}
            moved = _to_device(selected, device)
            batches.append({m: _detach(out) for m, out in module.encode(moved).items()})
            labels.append(selected["label"])
            indices.append(selected["index"])
    if not batches:
        raise ValueError("the test split has no samples to analyse")
    return AnalysisSet(
        module=module,
        features=concat_features(batches),
        labels=torch.cat(labels).to(device),
        index=torch.cat(indices),
        total=total,
        seed=seed,
        batch_size=batch_size,
    )


def _detach(output: Any) -> Any:
    return type(output)(
        tokens=output.tokens.detach(),
        mask=output.mask,
        pooled=output.pooled.detach(),
        present=output.present,
    )


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        moved = {key: _to_device(item, device) for key, item in value.items()}
        return type(value)(moved) if isinstance(value, dict) else moved
    return value
