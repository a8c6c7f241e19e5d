"""How balanced the modalities' learning is, per epoch: probes, gradient norms, OGM-GE scores.

Peng, Wei, Deng, Wang and Hu, "Balanced Multimodal Learning via On-the-fly Gradient
Modulation" (CVPR 2022) show that the modality that fits faster starves the others of
gradient. :class:`ModalityBalance` measures it without changing training; it logs, per
epoch:

* ``balance/<m>/probe_acc``: how linearly decodable the label is from modality ``m``'s
  pooled encoder features. A closed-form ridge classifier (:func:`ridge_probe`, the
  ``RidgeClassifier`` of scikit-learn: one-vs-rest targets in {-1, 1}, standardised
  features, unpenalised intercept) is fitted on the training features of the epoch, as the
  callback collected them from the training steps (at most ``max_train_samples``, the
  latest; the encoders change during the epoch, as with an online probe), and scored on the
  features of the validation run that follows; deterministic, so no seed;
* ``balance/<m>/grad_norm``: the L2 norm of the gradient of modality ``m``'s encoder
  parameters, taken before each optimizer step (before gradient clipping, after AMP
  unscaling), averaged over the epoch's steps; ``balance/ratio/<a>_over_<b>`` is the ratio
  of two of them (for each pair in the modality order; left out where the denominator is 0,
  a frozen encoder);
* ``balance/<m>/score``: OGM-GE's confidence score of modality ``m``, the softmax
  probability of the true class with only ``m`` present (the others marked absent, which
  every fusion strategy masks), averaged over the epoch's training samples; and
  ``balance/score_ratio/<a>_over_<b>``, OGM-GE's discrepancy ratio ``rho`` of the epoch.
  OGM-GE computes the unimodal logits of a concatenation's linear head from its slice of
  the weights plus half the bias; marking the other modality absent gives that slice plus
  the whole bias for concat fusion and extends to every strategy and head. Computed from
  the training step's own encoder outputs (no second encoding), in training mode as in
  OGM-GE, with the random generators restored afterwards so that training is unchanged.

The encoder outputs are read by a forward pre-hook on the module's fusion, so the callback
needs a module with ``fusion`` and ``predict_from_features`` (classifiers); probes and scores
need single-label class targets. With several processes the values are averaged over them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from mmexp.encoders.base import EncoderOutput
from mmexp.lit.balance_measures import (
    FeatureRows,
    class_targets,
    encoder_grad_norms,
    ridge_probe,
    unimodal_scores_apart,
)
from mmexp.lit.fusion_inputs import FusionInputs

log = logging.getLogger(__name__)

PREFIX = "balance"


class ModalityBalance(Callback):
    """Log per-modality probe accuracy, encoder gradient norms and OGM-GE scores per epoch.

    Args:
        ridge_alpha: Ridge penalty of the probes (on standardised features).
        max_train_samples: Training rows kept per modality for the probe (the latest).
        scores: Also compute OGM-GE's per-modality confidence scores and their ratios.
    """

    def __init__(
        self, ridge_alpha: float = 1.0, max_train_samples: int = 10000, scores: bool = True
    ) -> None:
        self.ridge_alpha = ridge_alpha
        self.max_train_samples = max_train_samples
        self.scores = scores
        self._inputs = FusionInputs()
        self._reset_train()
        self._val = FeatureRows()

    def _reset_train(self) -> None:
        self._train = FeatureRows(self.max_train_samples)
        self._grad_sums: dict[str, float] = {}
        self._steps = 0
        self._score_sums: dict[str, float] = {}
        self._score_counts: dict[str, int] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Hook the fusion's input (the encoder outputs of each step)."""
        fusion = getattr(pl_module, "fusion", None)
        if fusion is None or not hasattr(pl_module, "predict_from_features"):
            log.warning(
                "modality_balance: %s has no fusion; only gradient norms are logged",
                type(pl_module).__name__,
            )
            return
        self._inputs.attach(fusion)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the hook."""
        self._inputs.detach()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the epoch's collections."""
        self._reset_train()

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        """Listen to the fusion's input during the step (its first call: the step's own)."""
        self._inputs.listen()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Keep the step's pooled features; add its OGM-GE scores."""
        features = self._inputs.take()
        labels = batch.get("label") if isinstance(batch, Mapping) else None
        if features is None or not class_targets(labels):
            return
        self._train.add(features, labels)
        if self.scores and len(features) > 1:
            self._add_scores(pl_module, features, labels)

    def _add_scores(
        self, pl_module: Any, features: Mapping[str, EncoderOutput], labels: torch.Tensor
    ) -> None:
        for name, values in unimodal_scores_apart(pl_module, features, labels).items():
            self._score_sums[name] = self._score_sums.get(name, 0.0) + float(values.sum())
            self._score_counts[name] = self._score_counts.get(name, 0) + len(values)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Add the encoders' gradient norms of this step."""
        for name, norm in encoder_grad_norms(pl_module).items():
            self._grad_sums[name] = self._grad_sums.get(name, 0.0) + norm
        self._steps += 1

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the validation features."""
        self._val = FeatureRows()

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Listen to the fusion's input (not in the sanity check)."""
        if not trainer.sanity_checking:
            self._inputs.listen()

    def on_validation_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the batch's pooled features."""
        features = self._inputs.take()
        labels = batch.get("label") if isinstance(batch, Mapping) else None
        if features is not None and class_targets(labels):
            self._val.add(features, labels)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fit each modality's probe on the epoch's training features; log its accuracy."""
        if trainer.sanity_checking:
            return
        values = {}
        for name in getattr(pl_module, "encoders", {}):
            values[f"{PREFIX}/{name}/probe_acc"] = self._probe(name)
        self._log(trainer, pl_module, values)

    def _probe(self, name: str) -> float:
        if name not in self._train.labels or name not in self._val.labels:
            return float("nan")
        train_x, train_y = self._train.get(name)
        test_x, test_y = self._val.get(name)
        if len(torch.unique(train_y)) < 2 or len(test_y) == 0:
            return float("nan")
        return ridge_probe(train_x, train_y, test_x, test_y, self.ridge_alpha)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the epoch's gradient norms, scores and their ratios."""
        names = list(getattr(pl_module, "encoders", {}))
        values: dict[str, float] = {}
        norms = {m: self._grad_sums.get(m, 0.0) / max(self._steps, 1) for m in names}
        scores = {
            m: self._score_sums[m] / self._score_counts[m]
            if self._score_counts.get(m)
            else float("nan")
            for m in names
        }
        for name in names:
            values[f"{PREFIX}/{name}/grad_norm"] = norms[name]
            if self.scores:
                values[f"{PREFIX}/{name}/score"] = scores[name]
        values = self._reduced(trainer, pl_module, values)
        for a, b in itertools.combinations(names, 2):
            norm_a, norm_b = values[f"{PREFIX}/{a}/grad_norm"], values[f"{PREFIX}/{b}/grad_norm"]
            if norm_b > 0:
                values[f"{PREFIX}/ratio/{a}_over_{b}"] = norm_a / norm_b
            if self.scores:
                score_a, score_b = values[f"{PREFIX}/{a}/score"], values[f"{PREFIX}/{b}/score"]
                if score_b > 0:
                    values[f"{PREFIX}/score_ratio/{a}_over_{b}"] = score_a / score_b
        self._log(trainer, pl_module, values, reduce=False)

    @staticmethod
    def _reduced(trainer: Any, pl_module: Any, values: dict[str, float]) -> dict[str, float]:
        if not values:
            return values
        stacked = torch.tensor(list(values.values()), dtype=torch.float32, device=pl_module.device)
        reduced = trainer.strategy.reduce(stacked, reduce_op="mean")
        return dict(zip(values, reduced.tolist(), strict=True))

    def _log(
        self, trainer: Any, pl_module: Any, values: dict[str, float], reduce: bool = True
    ) -> None:
        if reduce:
            values = self._reduced(trainer, pl_module, values)
        finite = {k: v for k, v in values.items() if v == v and abs(v) != float("inf")}
        if finite:
            pl_module.log_dict(finite)
