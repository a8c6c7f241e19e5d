"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement.

Peng, Wei, Deng, Wang and Hu, "Balanced Multimodal Learning via On-the-fly Gradient
Modulation" (CVPR 2022; reference code GeWu-Lab/OGM-GE_CVPR2022). At every step, each
modality's confidence is the summed softmax probability of the true class with that
modality alone, ``s_u = sum_i softmax(f_u(x_i))[y_i]``, and its discrepancy ratio is
``rho_u = s_u / s_v`` against the other modality. The dominant modality (``rho_u > 1``)
has its encoder's gradient scaled by ``k_u = 1 - tanh(alpha * rho_u)`` (the paper's Eq. 10
and the reference code: ``tanh`` of the ratio itself, not of its excess over 1), the other
keeps ``k = 1``. Generalisation enhancement then adds Gaussian noise with the standard
deviation of each parameter's own (unmodulated) gradient to every modulated gradient, of
both modalities: ``g <- k * g + N(0, std(g)^2)``.

In mmexp the unimodal prediction ``f_u`` is the module's own fusion and head with the other
modality marked absent (:func:`mmexp.lit.balance_measures.unimodal_scores`), which every
strategy masks; for concatenation with a linear head it is the reference's weight slice
with the whole bias instead of half of it. The confidences are means over the samples that
have the modality (the reference's sums, divided by the same batch size, when every
sample has both), so that missing modalities do not tilt the ratio. With more than two
modalities ``s_v`` is the mean of the others' confidences, which is the paper's ratio for
two. The reference trains with SGD; with an adaptive optimizer (AdamW, mmexp's default)
the running gradient scale absorbs much of a slowly varying coefficient, which the
callback warns about.

Where the reference modulates only the 4-D (convolution) weights of its two ResNets, the
default here modulates every parameter of the encoder, so that Transformer towers are
modulated too; ``parameters=conv`` restores the reference's choice.

Under DDP the confidences are summed over the processes before the ratio is taken, and the
noise is drawn from a generator seeded by the step, so every process applies the same
update. The coefficients and ratio of each step are logged as ``ogm_ge/<m>/coeff`` and
``ogm_ge/<m>/ratio``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from mmexp.encoders.base import EncoderOutput
from mmexp.lit.balance_measures import class_targets, unimodal_scores_apart
from mmexp.lit.fusion_inputs import FusionInputs

log = logging.getLogger(__name__)

PARAMETER_CHOICES = ("all", "conv")
PREFIX = "ogm_ge"


def discrepancy_ratios(confidences: Mapping[str, float]) -> dict[str, float]:
    """Each modality's confidence over the mean of the others' (``rho`` of the paper)."""
    ratios = {}
    for name, own in confidences.items():
        others = [value for other, value in confidences.items() if other != name]
        mean = sum(others) / len(others)
        ratios[name] = own / mean if mean > 0 else math.inf
    return ratios


def modulation_coefficients(ratios: Mapping[str, float], alpha: float) -> dict[str, float]:
    """``1 - tanh(alpha * rho)`` for a modality with ``rho > 1``, else 1 (Eq. 10)."""
    return {
        name: 1.0 - math.tanh(alpha * ratio) if ratio > 1 else 1.0 for name, ratio in ratios.items()
    }


class OGMGE(Callback):
    """Scale each encoder's gradient by its OGM-GE coefficient before the optimizer step.

    Args:
        alpha: The modulation strength (the reference's ``--alpha``; its README recommends
            0.8 for CREMA-D and 0.1 for VGGSound).
        modulation_starts: First epoch (0-based) of modulation.
        modulation_ends: Last epoch modulated, inclusive (the reference's 50).
        noise: Add the generalisation-enhancement noise (OGM-GE); ``false`` is plain OGM.
        parameters: ``all`` encoder parameters, or ``conv`` (4-D weights only, the
            reference's choice).

    Raises:
        ValueError: ``alpha`` not positive, an unknown ``parameters``, or epochs out of order.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        modulation_starts: int = 0,
        modulation_ends: int = 50,
        noise: bool = True,
        parameters: str = "all",
    ) -> None:
        if alpha <= 0:
            raise ValueError(f"training.alpha (OGM-GE) must be positive, got {alpha}")
        if parameters not in PARAMETER_CHOICES:
            raise ValueError(
                f"OGM-GE parameters={parameters!r}: expected one of {PARAMETER_CHOICES}"
            )
        if modulation_ends < modulation_starts:
            raise ValueError(
                f"OGM-GE modulation_ends={modulation_ends} is before "
                f"modulation_starts={modulation_starts}"
            )
        self.alpha = alpha
        self.modulation_starts = modulation_starts
        self.modulation_ends = modulation_ends
        self.noise = noise
        self.parameters = parameters
        self._inputs = FusionInputs()
        self._confidence: dict[str, torch.Tensor] = {}
        self.last_coefficients: dict[str, float] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the module and modalities; hook the fusion's input."""
        if stage != "fit":
            return
        fusion = getattr(pl_module, "fusion", None)
        if fusion is None or not hasattr(pl_module, "predict_from_features"):
            raise TypeError(
                f"training=ogm_ge needs a module with a fusion strategy and class logits; "
                f"{type(pl_module).__name__} has none"
            )
        names = list(pl_module.encoders)
        if len(names) < 2:
            raise ValueError(f"training=ogm_ge modulates two or more modalities, got {names}")
        for name in names:
            if not self._modulated(pl_module.encoders[name]):
                raise ValueError(
                    f"training=ogm_ge with parameters={self.parameters}: the {name} encoder "
                    f"({type(pl_module.encoders[name]).__name__}) has no such trainable "
                    "parameters"
                )
        self._inputs.attach(fusion)
        # rank 0's, so that every process draws the same noise even without seed_everything
        self._noise_seed = int(trainer.strategy.broadcast(torch.initial_seed() % (2**31)))
        optimizers = {type(o).__name__ for o in getattr(trainer, "optimizers", [])}
        target = getattr(getattr(pl_module, "optimizer_factory", None), "func", None)
        adaptive = optimizers | {getattr(target, "__name__", "")}
        if any(name.startswith(("Adam", "RMSprop", "Adagrad")) for name in adaptive):
            log.warning(
                "training=ogm_ge with an adaptive optimizer (%s): Adam-style updates divide "
                "by a running gradient scale, which absorbs much of a slowly varying "
                "coefficient; the reference trains with SGD (model.optimizer=SGD)",
                ", ".join(sorted(n for n in adaptive if n)),
            )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the hook."""
        self._inputs.detach()

    def _modulated(self, encoder: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [
            p
            for p in encoder.parameters()
            if p.requires_grad and (self.parameters == "all" or p.dim() == 4)
        ]

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        """Listen to the fusion's input of this step."""
        self._inputs.listen()
        self._labels = batch.get("label") if isinstance(batch, Mapping) else None

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        """Add this micro-batch's confidences (before the backward frees nothing they need)."""
        features = self._inputs.take()
        if features is None or not class_targets(self._labels):
            return
        self._add_confidences(pl_module, features, self._labels)

    def _add_confidences(
        self, pl_module: Any, features: Mapping[str, EncoderOutput], labels: torch.Tensor
    ) -> None:
        for name, values in unimodal_scores_apart(pl_module, features, labels).items():
            total = torch.stack([values.detach().float().sum(), torch.tensor(float(len(values)))])
            self._confidence[name] = self._confidence.get(name, 0.0) + total.cpu()

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Modulate the encoders' gradients by this step's coefficients."""
        confidence, self._confidence = self._confidence, {}
        names = list(pl_module.encoders)
        if set(confidence) != set(names):
            return
        # [modality, (sum, count)], summed over the processes: the mean confidence of the
        # samples that have each modality (the reference's sum when every sample has both)
        summed = torch.stack([confidence[n] for n in names])
        summed = trainer.strategy.reduce(summed.to(pl_module.device), reduce_op="sum").cpu()
        means = {
            n: float(row[0] / row[1]) if row[1] > 0 else 0.0
            for n, row in zip(names, summed, strict=True)
        }
        ratios = discrepancy_ratios(means)
        coefficients = modulation_coefficients(ratios, self.alpha)
        self.last_coefficients = coefficients
        values = {f"{PREFIX}/{n}/coeff": coefficients[n] for n in names}
        values.update({f"{PREFIX}/{n}/ratio": min(ratios[n], 1e6) for n in names})
        pl_module.log_dict(values, on_step=True, on_epoch=True, sync_dist=False)
        epoch = trainer.current_epoch
        if not self.modulation_starts <= epoch <= self.modulation_ends:
            return
        generator = None
        if self.noise:
            generator = torch.Generator(device=pl_module.device)
            generator.manual_seed(self._noise_seed + 1_000_003 * trainer.global_step)
        for name in names:
            for parameter in self._modulated(pl_module.encoders[name]):
                if parameter.grad is not None:
                    modulate(parameter.grad, coefficients[name], generator)


def modulate(
    grad: torch.Tensor, coefficient: float, generator: torch.Generator | None
) -> torch.Tensor:
    """``k * g``, plus ``N(0, std(g)^2)`` noise (in place) when a generator is given.

    The noise's standard deviation is that of the gradient before scaling, plus 1e-8 as in
    the reference, so that a zero gradient still gets noise of that scale.
    """
    if generator is None:
        return grad.mul_(coefficient)
    # a tensor, not a float: no device synchronisation per parameter
    spread = grad.float().std() if grad.numel() > 1 else grad.new_zeros((), dtype=torch.float32)
    noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=torch.float32)
    return grad.mul_(coefficient).add_(noise.mul_(spread + 1e-8).to(grad.dtype))
