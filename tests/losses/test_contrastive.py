"""The contrastive losses against open_clip's reference implementation, 1 and 2 processes."""

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss
from open_clip.loss import SigLipLoss as OpenSigLipLoss

from mmexp.losses import ClipLoss, SigLipLoss
from mmexp.train import train
from tests.helpers.distributed import run_distributed
from tests.losses import contrastive_workers as workers


def _features(batch: int = 6, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    b = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    return a.requires_grad_(True), b.requires_grad_(True)


def _loss_and_grads(loss: torch.Tensor, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return [loss.detach(), *torch.autograd.grad(loss, inputs)]


@pytest.mark.parametrize("local_loss", [False, True])
def test_clip_loss_matches_open_clip_single_process(local_loss):
    a, b = _features()
    ours = ClipLoss(init_temperature=0.05, local_loss=local_loss)
    theirs = OpenClipLoss(local_loss=local_loss)
    mine = _loss_and_grads(ours(a, b), a, b)
    reference = _loss_and_grads(theirs(a, b, ours.logit_scale), a, b)
    for got, expected in zip(mine, reference, strict=True):
        torch.testing.assert_close(got, expected)
    assert mine[0].item() > 0


def test_clip_temperature_is_learned_and_clamped():
    loss = ClipLoss(init_temperature=0.07)
    a, b = _features()
    loss(a, b).backward()
    assert loss.log_logit_scale.grad is not None and loss.log_logit_scale.grad != 0
    with torch.no_grad():
        loss.log_logit_scale.fill_(10.0)
    loss.clamp_parameters_()
    assert loss.logit_scale.item() == pytest.approx(100.0)
    frozen = ClipLoss(learnable_temperature=False)
    assert not frozen.log_logit_scale.requires_grad
    assert frozen.logit_scale.item() == pytest.approx(1 / 0.07)


def test_siglip_loss_matches_open_clip_single_process():
    a, b = _features()
    ours = SigLipLoss()
    theirs = OpenSigLipLoss()
    mine = _loss_and_grads(ours(a, b), a, b)
    reference = _loss_and_grads(theirs(a, b, ours.logit_scale, ours.logit_bias), a, b)
    for got, expected in zip(mine, reference, strict=True):
        torch.testing.assert_close(got, expected)
    assert ours.logit_scale.item() == pytest.approx(10.0)
    assert ours.logit_bias.item() == -10.0


def test_perfectly_aligned_features_give_a_small_loss():
    a, _ = _features(batch=4, dim=4)
    eye = torch.eye(4)
    assert ClipLoss(init_temperature=0.01)(eye, eye).item() < 1e-3
    assert ClipLoss()(a, a.flip(0)).item() > ClipLoss()(a, a).item()


def test_bad_temperature_is_refused():
    with pytest.raises(ValueError, match="init_temperature"):
        ClipLoss(init_temperature=0.0)


@pytest.mark.slow
def test_two_process_losses_match_open_clip(tmp_path):
    ranks = run_distributed(workers.compare_with_open_clip, 2, tmp_path)
    for rank, results in enumerate(ranks):
        keys = sorted({key.rsplit("-", 1)[0] for key in results})
        assert len(keys) == 5
        for key in keys:
            mine, reference = results[f"{key}-mmexp"], results[f"{key}-open_clip"]
            for name in ("loss", "grad_a", "grad_b"):
                torch.testing.assert_close(
                    mine[name], reference[name], msg=f"rank {rank}, {key}, {name}"
                )


@pytest.mark.slow
def test_two_process_gradients_equal_one_process_on_the_concatenated_batch(tmp_path):
    ranks = run_distributed(workers.ddp_tower_gradients, 2, tmp_path)
    a, b = workers.global_features(2)
    for name, make_loss in workers.LOSSES.items():
        for key, ids in ((name, None), (f"{name}_ids", workers.IDS)):
            single = workers.tower_gradients(workers.TwoTowers(make_loss()), a, b, ids)
            for rank, results in enumerate(ranks):
                assert set(results[key]) == set(single)
                for parameter, grad in single.items():
                    torch.testing.assert_close(
                        results[key][parameter], grad, msg=f"{key}, rank {rank}, {parameter}"
                    )
    assert math.isfinite(float(single["tower_a.weight"].abs().sum()))
    # Without the differentiable gather the gradient is only this rank's share: the
    # comparison above would catch a gather that drops the other ranks' gradient.
    single = workers.tower_gradients(workers.TwoTowers(workers.ClipLoss()), a, b)
    for parameter, grad in single.items():
        if parameter.startswith("tower"):
            torch.testing.assert_close(ranks[0]["clip_plain_gather"][parameter], grad / 2)


@pytest.mark.slow
def test_ranks_with_batches_of_different_sizes_give_the_one_process_loss(tmp_path):
    # An uneven validation split leaves the ranks' last batches a row apart; gloo aborts an
    # all-gather of unequal shapes, so the gather pads and trims. The global losses are the
    # one-process loss on every rank; the per-row ones (local CLIP, SigLIP) average to it
    # weighted by the rows of each rank, as the validation loss mean weighs them.
    ranks = run_distributed(workers.uneven_batch_losses, 2, tmp_path)
    total = sum(workers.UNEVEN)
    a, b = workers.global_features(2)
    a, b, ids = a[:total], b[:total], workers.IDS[:total]
    for name, make_loss in workers.LOSSES.items():
        for key, key_ids in ((name, None), (f"{name}_ids", ids)):
            single = float(make_loss()(a, b, ids=key_ids).detach())
            values = [results[key] for results in ranks]
            if name == "clip":
                assert values == pytest.approx([single] * 2, rel=1e-6), key
            weighted = sum(n * v for n, v in zip(workers.UNEVEN, values, strict=True)) / total
            assert weighted == pytest.approx(single, rel=1e-6), key


@pytest.mark.parametrize("local_loss", [False, True])
def test_distinct_ids_leave_the_losses_as_open_clip_computes_them(local_loss):
    a, b = _features()
    ids = torch.arange(len(a))
    clip = ClipLoss(init_temperature=0.05, local_loss=local_loss)
    reference = _loss_and_grads(OpenClipLoss(local_loss=local_loss)(a, b, clip.logit_scale), a, b)
    siglip = SigLipLoss()
    siglip_reference = _loss_and_grads(
        OpenSigLipLoss()(a, b, siglip.logit_scale, siglip.logit_bias), a, b
    )
    for got, expected in (
        (_loss_and_grads(clip(a, b, ids=ids), a, b), reference),
        (_loss_and_grads(siglip(a, b, ids=ids), a, b), siglip_reference),
    ):
        for value, want in zip(got, expected, strict=True):
            torch.testing.assert_close(value, want)


# Pair ids of a batch of 6: two captions of image 0, three of image 2.
IDS = torch.tensor([0, 0, 1, 2, 2, 2])


def brute_force_clip(a, b, ids, scale) -> torch.Tensor:
    """Each row's cross-entropy over its own pair and the pairs of OTHER items only."""
    terms = []
    for queries, keys in ((a, b), (b, a)):
        for i in range(len(ids)):
            allowed = [j for j in range(len(ids)) if j == i or ids[j] != ids[i]]
            logits = torch.stack([scale * queries[i] @ keys[j] for j in allowed])
            terms.append(-torch.log_softmax(logits, dim=0)[allowed.index(i)])
    return torch.stack(terms).mean()


@pytest.mark.parametrize("local_loss", [False, True])
def test_clip_leaves_pairs_of_the_same_item_out_of_each_others_softmax(local_loss):
    a, b = _features()
    loss = ClipLoss(init_temperature=0.05, local_loss=local_loss)
    got = _loss_and_grads(loss(a, b, ids=IDS), a, b)
    expected = _loss_and_grads(brute_force_clip(a, b, IDS, loss.logit_scale.detach()), a, b)
    for value, want in zip(got, expected, strict=True):
        torch.testing.assert_close(value, want)
    assert not torch.isclose(got[0], loss(a, b)).item()  # the duplicates do change the loss


def test_siglip_counts_pairs_of_the_same_item_as_positives():
    a, b = _features()
    loss = SigLipLoss()
    labels = torch.where(IDS[:, None] == IDS[None, :], 1.0, -1.0)
    logits = loss.logit_scale.detach() * a @ b.T + loss.logit_bias.detach()
    expected = _loss_and_grads(-F.logsigmoid(labels * logits).sum() / len(a), a, b)
    got = _loss_and_grads(loss(a, b, ids=IDS), a, b)
    for value, want in zip(got, expected, strict=True):
        torch.testing.assert_close(value, want)


@pytest.mark.parametrize("log_scale", [None, math.log(100.0), 5.0])
def test_clip_temperature_at_or_above_the_bound_keeps_its_gradient(log_scale):
    # None: init_temperature=0.01, whose float32 log scale lies just above log(100).
    loss = ClipLoss(init_temperature=0.01)
    if log_scale is not None:
        with torch.no_grad():
            loss.log_logit_scale.fill_(log_scale)
    assert loss.log_logit_scale.item() >= math.log(100.0) - 1e-6
    a, b = _features()
    (grad,) = torch.autograd.grad(loss(a, b), loss.log_logit_scale)
    # open_clip takes the scale as given: its gradient through exp of the same parameter.
    reference = loss.log_logit_scale.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(OpenClipLoss()(a, b, reference.exp()), reference)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().item() > 1e-4


@pytest.mark.parametrize(
    ("log_scale", "clamped"),
    [(10.0, math.log(100.0)), (math.log(100.0) + 1e-3, math.log(100.0)), (2.0, 2.0), (-1.0, 0.0)],
)
def test_clamp_parameters_bounds_the_scale_as_open_clip(log_scale, clamped):
    loss = ClipLoss(max_logit_scale=100.0)
    with torch.no_grad():
        loss.log_logit_scale.fill_(log_scale)
    loss.clamp_parameters_()
    # open_clip_train: logit_scale.clamp_(0, math.log(100)) after every optimizer step.
    assert loss.log_logit_scale.item() == pytest.approx(clamped, abs=1e-6)
    assert loss.logit_scale.item() == pytest.approx(math.exp(clamped), rel=1e-5)
    assert loss.log_logit_scale.requires_grad


def test_contrastive_pretraining_keeps_the_learned_scale_within_the_bound(make_train_cfg):
    # Logit scale 200 at the start, above the bound of 100; two batches a step.
    cfg = make_train_cfg(
        "objective=contrastive",
        "objective.loss.init_temperature=0.005",
        "data.num_train=96",
        "data.num_val=32",
        "data.num_test=32",
        "trainer.max_epochs=1",
        "++trainer.accumulate_grad_batches=2",
    )
    result = train(cfg)
    state = torch.load(result["best_checkpoint"], weights_only=True)["state_dict"]
    log_scale = state["loss_fn.log_logit_scale"]
    assert log_scale.item() <= math.log(100.0) + 1e-6
