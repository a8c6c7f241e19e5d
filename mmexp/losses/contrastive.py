"""Contrastive losses between two modality towers: CLIP's InfoNCE and SigLIP's sigmoid loss.

Both own their temperature (and SigLIP its bias) as learnable parameters, so the objective
config alone defines the loss, and both compute over the global batch under DDP.

Both take optional pair ``ids`` (e.g. the image of each image-caption pair). Pairs that share
an id show the same item twice (two captions of one image, or a distributed sampler's
repeat), so neither may serve as the other's negative: CLIP leaves them out of each other's
softmax, SigLIP counts them as positives. Without ids, or with distinct ids, both are the
plain losses of CLIP and SigLIP (checked against open_clip in the tests).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmexp.losses.distributed import batch_sizes, distributed_world, gather_with_local


def _logit_scale_parameter(init_temperature: float, learnable: bool) -> nn.Parameter:
    if init_temperature <= 0:
        raise ValueError(f"objective.loss.init_temperature must be > 0, got {init_temperature}")
    # Log-parametrised as in CLIP: the scale stays positive and the optimiser works in log space.
    return nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)), requires_grad=learnable)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the (global) batch.

    From Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision", ICML 2021 (CLIP).

    With ``local_loss=False`` every rank computes the full ``N x N`` logits of the global
    batch; with ``local_loss=True`` only its own rows against all columns (``B x N``), the
    memory-saving variant of open_clip. The two agree in value and, with
    ``gather_with_grad=True``, in gradient.

    Args:
        init_temperature: Initial softmax temperature (CLIP: 0.07).
        learnable_temperature: Train the temperature.
        max_logit_scale: Upper bound of ``1 / temperature`` (CLIP: 100) against instability,
            enforced on the parameter after each optimizer step by :meth:`clamp_parameters_`.
        local_loss: Compute only this rank's rows of the logits.
        gather_with_grad: Differentiable all-gather (exact global gradient); see
            :mod:`mmexp.losses.distributed`.
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_logit_scale: float = 100.0,
        local_loss: bool = False,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__()
        self.log_logit_scale = _logit_scale_parameter(init_temperature, learnable_temperature)
        self.max_log_logit_scale = math.log(max_logit_scale)
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    @property
    def logit_scale(self) -> torch.Tensor:
        """``1 / temperature``, unclamped: the bound is kept by :meth:`clamp_parameters_`."""
        # A clamp here would zero the parameter's gradient for good once it reached the bound
        # (from the start with init_temperature=0.01: float32 rounds log(100) up).
        return self.log_logit_scale.exp()

    def clamp_parameters_(self) -> None:
        """Clamp the log logit scale into ``[0, log(max_logit_scale)]`` in place.

        As open_clip does after every optimizer step: the temperature stays within
        ``[1 / max_logit_scale, 1]`` and keeps its gradient at the bound.
        """
        with torch.no_grad():
            self.log_logit_scale.clamp_(0, self.max_log_logit_scale)

    def forward(
        self, features_a: torch.Tensor, features_b: torch.Tensor, ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Loss of L2-normalised paired features ``[B, D]`` (row ``i`` of both is a pair).

        ``ids`` (``[B]``, optional): pairs with equal ids are not each other's negatives.
        """
        return clip_loss(
            features_a,
            features_b,
            self.logit_scale,
            self.local_loss,
            self.gather_with_grad,
            ids,
            equal_batches=self.training,
        )


def gather_ids(ids: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Every rank's pair ids, rank order (no gradient: ids are integers).

    ``sizes``: every rank's batch size, when the caller has gathered them already.
    """
    return gather_with_local(ids, with_grad=False, keep_local_grad=False, sizes=sizes)


def clip_loss(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    logit_scale: torch.Tensor,
    local_loss: bool = False,
    gather_with_grad: bool = True,
    ids: torch.Tensor | None = None,
    equal_batches: bool = False,
) -> torch.Tensor:
    """Symmetric cross-entropy of the scaled similarity matrix; see :class:`ClipLoss`.

    ``equal_batches``: every rank's batch has as many rows as this one (training), so
    their sizes need no gathering.
    """
    rank, _ = distributed_world()
    # The ranks' batch sizes differ in the last validation batch of an uneven split.
    sizes = batch_sizes(len(features_a), features_a.device, equal=equal_batches)
    # With local_loss this rank's features get their gradient as rows already; like
    # open_clip, a plain gather then leaves the columns detached.
    keep = not local_loss
    all_a = gather_with_local(features_a, gather_with_grad, keep_local_grad=keep, sizes=sizes)
    all_b = gather_with_local(features_b, gather_with_grad, keep_local_grad=keep, sizes=sizes)
    if local_loss:
        logits_a = logit_scale * features_a @ all_b.T
        logits_b = logit_scale * features_b @ all_a.T
        # This rank's pairs sit at the columns after every earlier rank's.
        targets = torch.arange(len(features_a), device=features_a.device) + sum(sizes[:rank])
    else:
        logits_a = logit_scale * all_a @ all_b.T
        targets = torch.arange(len(all_a), device=features_a.device)
    if ids is not None:
        all_ids = gather_ids(ids, sizes)
        row_ids = ids if local_loss else all_ids
        # Another pair of the same item is no negative: drop it from both softmaxes. The mask
        # is the same for both directions (equal ids are symmetric; local rows index b and a
        # alike), and each row keeps its own target.
        same = row_ids[:, None] == all_ids[None, :]
        same[torch.arange(len(targets), device=same.device), targets] = False
        logits_a = logits_a.masked_fill(same, float("-inf"))
        if local_loss:
            logits_b = logits_b.masked_fill(same, float("-inf"))
    if not local_loss:
        logits_b = logits_a.T
    return (F.cross_entropy(logits_a, targets) + F.cross_entropy(logits_b, targets)) / 2


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss: every pair in the global batch is a binary problem.

    From Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023 (SigLIP).

    Each rank scores its own ``a`` features against every rank's ``b`` features (gathered
    with gradient), so the value and gradient equal one process on the concatenated batch.

    Args:
        init_temperature: Initial temperature (SigLIP: 0.1, i.e. logit scale 10).
        init_bias: Initial logit bias (SigLIP: -10, against the many negatives at start).
        learnable_temperature: Train the temperature and bias.
    """

    def __init__(
        self,
        init_temperature: float = 0.1,
        init_bias: float = -10.0,
        learnable_temperature: bool = True,
    ) -> None:
        super().__init__()
        self.log_logit_scale = _logit_scale_parameter(init_temperature, learnable_temperature)
        self.logit_bias = nn.Parameter(
            torch.tensor(float(init_bias)), requires_grad=learnable_temperature
        )

    @property
    def logit_scale(self) -> torch.Tensor:
        """``1 / temperature``."""
        return self.log_logit_scale.exp()

    def forward(
        self, features_a: torch.Tensor, features_b: torch.Tensor, ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Loss of L2-normalised paired features ``[B, D]``, summed over pairs per ``a`` row.

        ``ids`` (``[B]``, optional): pairs with equal ids are each other's positives.
        """
        rank, _ = distributed_world()
        # Training batches are equal on every rank; evaluation ones may differ by a row.
        sizes = batch_sizes(len(features_a), features_a.device, equal=self.training)
        all_b = gather_with_local(features_b, with_grad=True, sizes=sizes)
        logits = self.logit_scale * features_a @ all_b.T + self.logit_bias
        if ids is not None:
            # Every b of the same item matches this a, including its own pair.
            same = ids[:, None] == gather_ids(ids, sizes)[None, :]
            labels = same.to(logits.dtype) * 2 - 1
        else:
            labels = -torch.ones_like(logits)
            rows = torch.arange(len(features_a), device=logits.device)
            labels[rows, rows + sum(sizes[:rank])] = 1.0
        return -F.logsigmoid(labels * logits).sum() / len(features_a)
