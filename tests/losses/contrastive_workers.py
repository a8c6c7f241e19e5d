"""Per-rank computations of the distributed contrastive-loss tests (importable for spawn)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss
from open_clip.loss import SigLipLoss as OpenSigLipLoss
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmexp.losses import ClipLoss, SigLipLoss, clip_loss

PER_RANK = 4
DIM = 8
# Pair ids of the global batch at 2 ranks: repeats within a rank and across ranks.
IDS = torch.tensor([0, 1, 1, 2, 2, 3, 0, 4])


def global_features(world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random, normalised features on every rank (the global batch)."""
    generator = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(world_size * PER_RANK, DIM, generator=generator), dim=-1)
    b = F.normalize(torch.randn(world_size * PER_RANK, DIM, generator=generator), dim=-1)
    return a, b


def _value_and_grads(loss_fn, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    a, b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = loss_fn(a, b)
    loss.backward()
    return {"loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad}


def compare_with_open_clip(rank: int, world_size: int) -> dict[str, dict[str, torch.Tensor]]:
    """mmexp and open_clip losses and feature gradients on this rank's slice."""
    a, b = global_features(world_size)
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    a, b = a[rows], b[rows]
    scale = torch.tensor(1 / 0.07)
    results = {}
    for local_loss in (False, True):
        for with_grad in (False, True):
            reference = OpenClipLoss(
                local_loss=local_loss, gather_with_grad=with_grad, rank=rank, world_size=world_size
            )
            key = f"clip-local{int(local_loss)}-grad{int(with_grad)}"
            results[key + "-mmexp"] = _value_and_grads(
                lambda x, y, ll=local_loss, wg=with_grad: clip_loss(x, y, scale, ll, wg), a, b
            )
            results[key + "-open_clip"] = _value_and_grads(
                lambda x, y, ref=reference: ref(x, y, scale), a, b
            )
    siglip = SigLipLoss()
    reference = OpenSigLipLoss(rank=rank, world_size=world_size, dist_impl="gather")
    results["siglip-mmexp"] = _value_and_grads(siglip, a, b)
    results["siglip-open_clip"] = _value_and_grads(
        lambda x, y: reference(x, y, siglip.logit_scale.detach(), siglip.logit_bias.detach()), a, b
    )
    return results


class TwoTowers(nn.Module):
    """Two linear towers and a contrastive loss: the smallest contrastive model."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tower_a = nn.Linear(DIM, DIM)
        self.tower_b = nn.Linear(DIM, DIM)
        self.loss = loss

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.loss(
            F.normalize(self.tower_a(a), dim=-1), F.normalize(self.tower_b(b), dim=-1), ids=ids
        )


LOSSES = {
    "clip": lambda: ClipLoss(gather_with_grad=True),
    "clip_local": lambda: ClipLoss(gather_with_grad=True, local_loss=True),
    "siglip": lambda: SigLipLoss(),
}
# The plain gather: each rank only gets its own loss's gradient, half the global one at 2 ranks.
PLAIN_GATHER = {"clip_plain_gather": lambda: ClipLoss(gather_with_grad=False)}


def tower_gradients(
    model: nn.Module, a: torch.Tensor, b: torch.Tensor, ids: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Parameter gradients of one backward pass of ``model`` on ``(a, b)``."""
    model(a, b, ids).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def ddp_tower_gradients(rank: int, world_size: int) -> dict[str, dict[str, torch.Tensor]]:
    """DDP-averaged gradients of the two-tower model on this rank's slice, per loss."""
    a, b = global_features(world_size)
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    results = {}
    for name, make_loss in {**LOSSES, **PLAIN_GATHER}.items():
        model = DistributedDataParallel(TwoTowers(make_loss()))
        grads = tower_gradients(model, a[rows], b[rows])
        results[name] = {key.removeprefix("module."): value for key, value in grads.items()}
        if name in LOSSES:  # with pair ids that repeat across ranks
            model = DistributedDataParallel(TwoTowers(make_loss()))
            grads = tower_gradients(model, a[rows], b[rows], IDS[rows])
            results[f"{name}_ids"] = {
                key.removeprefix("module."): value for key, value in grads.items()
            }
    return results


# Rows per rank of an uneven split's last validation batch (unrepeated evaluation shards).
UNEVEN = (3, 2)


def uneven_batch_losses(rank: int, world_size: int) -> dict[str, float]:
    """Each loss on this rank's rows of an uneven global batch (``UNEVEN`` rows per rank)."""
    a, b = global_features(world_size)
    start = sum(UNEVEN[:rank])
    rows = slice(start, start + UNEVEN[rank])
    # In eval mode, as in a validation step: training batches are equal on every rank, and
    # the losses gather the sizes only outside training.
    losses = {name: make_loss().eval() for name, make_loss in LOSSES.items()}
    results = {name: float(loss(a[rows], b[rows]).detach()) for name, loss in losses.items()}
    for name, loss in losses.items():
        results[f"{name}_ids"] = float(loss(a[rows], b[rows], ids=IDS[rows]).detach())
    return results
