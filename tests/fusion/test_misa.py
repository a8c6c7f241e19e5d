"""MISA against its formulas written out in NumPy, and its losses through the training step.

The reference computation follows the authors' code (declare-lab/MISA, ``src/models.py``,
``src/solver.py``, ``src/utils/functions.py``) in float64, sample by sample for the
Transformer layer: projection ``LayerNorm(ReLU(W u))``, sigmoid shared and private
encoders, one post-norm Transformer encoder layer over the private then shared vectors
with the absent modalities' vectors left out, CMD with 5 moments, the soft orthogonality
``DiffLoss`` and the reconstruction MSE.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch

from mmexp.encoders import EncoderOutput
from mmexp.fusion import ConcatFusion, MISAFusion
from mmexp.fusion.misa import soft_orthogonality
from mmexp.losses.itm import MatchingLoss

DIM, HIDDEN, BATCH = 6, 8, 5
MODALITIES = ("image", "text", "audio")


def features(present=None, seed=0, grad=False):
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in MODALITIES:
        pooled = torch.randn(BATCH, DIM, generator=generator).requires_grad_(grad)
        tokens = torch.randn(BATCH, 2, DIM, generator=generator)
        mask = torch.ones(BATCH, 2, dtype=torch.bool)
        mask_present = None if present is None else torch.tensor(present[name])
        out[name] = EncoderOutput(tokens, mask, pooled, mask_present)
    return out


def fusion(seed=0, **kwargs):
    torch.manual_seed(seed)
    module = MISAFusion(MODALITIES, DIM, hidden_dim=HIDDEN, ff_dim=16, **kwargs).double()
    return module.eval()  # no dropout


def np64(tensor):
    return tensor.detach().double().numpy()


def linear(layer, x):
    return x @ np64(layer.weight).T + np64(layer.bias)


def layer_norm(norm, x):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.eps) * np64(norm.weight) + np64(norm.bias)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def encoder_layer(layer, x):
    """Post-norm ``nn.TransformerEncoderLayer`` (ReLU) on one sample's ``[S, h]`` vectors."""
    heads = layer.self_attn.num_heads
    w, b = np64(layer.self_attn.in_proj_weight), np64(layer.self_attn.in_proj_bias)
    q, k, v = (
        x @ w[i * HIDDEN : (i + 1) * HIDDEN].T + b[i * HIDDEN : (i + 1) * HIDDEN] for i in range(3)
    )
    width = HIDDEN // heads
    parts = []
    for head in range(heads):
        span = slice(head * width, (head + 1) * width)
        weights = softmax(q[:, span] @ k[:, span].T / np.sqrt(width))
        parts.append(weights @ v[:, span])
    attended = linear(layer.self_attn.out_proj, np.concatenate(parts, axis=1))
    x = layer_norm(layer.norm1, x + attended)
    forward = linear(layer.linear2, np.maximum(linear(layer.linear1, x), 0))
    return layer_norm(layer.norm2, x + forward)


def subspaces(module, feats):
    projected, private, shared = {}, {}, {}
    for name in MODALITIES:
        linear_in, _, norm = module.project[name]
        projected[name] = layer_norm(
            norm, np.maximum(linear(linear_in, np64(feats[name].pooled)), 0)
        )
        private[name] = sigmoid(linear(module.private[name][0], projected[name]))
        shared[name] = sigmoid(linear(module.shared[0], projected[name]))
    return projected, private, shared


def reference_output(module, feats, present):
    _, private, shared = subspaces(module, feats)
    rows = []
    for row in range(BATCH):
        have = [m for m in MODALITIES if present[m][row]]
        order = [("private", m) for m in have] + [("shared", m) for m in have]
        vectors = np.stack(
            [(private if kind == "private" else shared)[m][row] for kind, m in order]
        )
        updated = dict(zip(order, encoder_layer(module.fuse_layer, vectors), strict=True))
        slots = [("private", m) for m in MODALITIES] + [("shared", m) for m in MODALITIES]
        rows.append(np.concatenate([updated.get(slot, np.zeros(HIDDEN)) for slot in slots]))
    return np.stack(rows)


def cmd(x, y, moments=5):
    """declare-lab/MISA ``CMD``: distance of means plus of central moments 2..5."""
    mx, my = x.mean(0), y.mean(0)
    total = np.sqrt(((mx - my) ** 2).sum())
    for k in range(2, moments + 1):
        total += np.sqrt(((((x - mx) ** k).mean(0) - ((y - my) ** k).mean(0)) ** 2).sum())
    return total


def diff(x, y):
    """declare-lab/MISA ``DiffLoss``."""
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)
    y = y / (np.linalg.norm(y, axis=1, keepdims=True) + 1e-6)
    return ((x.T @ y) ** 2).mean()


def reference_losses(module, feats, present):
    """The three losses over the modalities and pairs some sample has (others left out)."""
    projected, private, shared = subspaces(module, feats)
    have = {m: np.asarray(present[m]) for m in MODALITIES}
    seen = [m for m in MODALITIES if have[m].any()]
    pairs = [(a, b) for a, b in combinations(MODALITIES, 2) if (have[a] & have[b]).any()]
    both = {pair: have[pair[0]] & have[pair[1]] for pair in pairs}
    sim = np.mean([cmd(shared[a][both[a, b]], shared[b][both[a, b]]) for a, b in pairs])
    difference = sum(diff(private[m][have[m]], shared[m][have[m]]) for m in seen)
    difference += sum(diff(private[a][both[a, b]], private[b][both[a, b]]) for a, b in pairs)
    recon = np.mean(
        [
            (
                (linear(module.reconstruct[m], private[m] + shared[m]) - projected[m])[have[m]] ** 2
            ).mean()
            for m in seen
        ]
    )
    return {"misa_diff": difference, "misa_sim": sim, "misa_recon": recon}


ALL = {m: [True] * BATCH for m in MODALITIES}
SOME = {
    "image": [True, True, False, True, True],
    "text": [True, False, True, True, True],
    "audio": [False, True, True, True, True],
}


@pytest.mark.parametrize("present", [ALL, SOME], ids=["all-present", "some-absent"])
def test_output_and_losses_equal_the_reference_formulas(present):
    module = fusion()
    feats = features(None if present is ALL else present)
    feats = {
        m: EncoderOutput(f.tokens.double(), f.mask, f.pooled.double(), f.present)
        for m, f in feats.items()
    }
    with torch.no_grad():
        output, losses = module.fuse_with_losses(feats)
        alone = module(feats)
    np.testing.assert_allclose(np64(output), reference_output(module, feats, present), atol=1e-10)
    torch.testing.assert_close(alone, output)  # the same fused output without the losses
    expected = reference_losses(module, feats, present)
    assert set(losses) == set(expected) == set(module.own_losses)
    for name, value in expected.items():
        np.testing.assert_allclose(float(losses[name]), value, rtol=1e-9, err_msg=name)
    assert module.out_dim == 2 * len(MODALITIES) * HIDDEN


def test_the_difference_loss_does_not_differentiate_through_the_row_norms():
    # Gradients as the reference's DiffLoss (norms detached), and not as with attached norms.
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(7, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.rand(7, 4, generator=generator, dtype=torch.float64)

    def written_out(a, b, detach):
        a, b = a - a.mean(0, keepdim=True), b - b.mean(0, keepdim=True)
        norm_a, norm_b = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
        if detach:
            norm_a, norm_b = norm_a.detach(), norm_b.detach()
        return ((a / (norm_a + 1e-6)).T @ (b / (norm_b + 1e-6))).pow(2).mean()

    (ours,) = torch.autograd.grad(soft_orthogonality(x, y), x)
    (detached,) = torch.autograd.grad(written_out(x, y, True), x)
    (attached,) = torch.autograd.grad(written_out(x, y, False), x)
    torch.testing.assert_close(ours, detached)
    assert not torch.allclose(ours, attached)


def test_weights_and_widths_are_checked_by_name():
    with pytest.raises(ValueError, match=r"loss weights must be >= 0, got \{'misa_sim': -1.0\}"):
        MISAFusion(MODALITIES, DIM, sim_weight=-1.0)
    with pytest.raises(ValueError, match="heads"):
        MISAFusion(MODALITIES, DIM, hidden_dim=9, heads=2)
    assert MISAFusion(MODALITIES, DIM).own_losses == {
        "misa_diff": 0.3,
        "misa_sim": 1.0,
        "misa_recon": 1.0,
    }
    assert ConcatFusion(MODALITIES, DIM).own_losses == {}


def test_matching_refuses_a_strategy_whose_losses_it_would_drop():
    with pytest.raises(ValueError, match=r"MISAFusion trains with losses of its own"):
        MatchingLoss(MISAFusion(("image", "text"), DIM))


def test_training_adds_the_weighted_losses_and_logs_each_part(make_train_cfg):
    from mmexp.builders import build_data_and_model
    from mmexp.train import train

    cfg = make_train_cfg("fusion=misa", "fusion.sim_weight=2.0", "trainer.max_epochs=1")
    datamodule, model = build_data_and_model(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    model.eval()  # no dropout: both computations see the same network
    logits, loss, parts = model._training_losses(batch)
    fused, own = model.fusion.fuse_with_losses(model.encode(batch))
    task = torch.nn.functional.cross_entropy(model.head(fused), batch["label"])
    torch.testing.assert_close(parts["task_loss"], task)
    expected = task + 0.3 * own["misa_diff"] + 2.0 * own["misa_sim"] + 1.0 * own["misa_recon"]
    torch.testing.assert_close(loss, expected)
    assert list(parts) == ["task_loss", "misa_diff", "misa_sim", "misa_recon"]
    # validation and test score the task loss alone
    torch.testing.assert_close(model._shared_step(batch)[1], task)

    result = train(cfg)
    import csv
    from pathlib import Path

    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    logged = {key for row in rows for key, value in row.items() if value}
    for name in ("task_loss", "misa_diff", "misa_sim", "misa_recon"):
        assert f"train/{name}_epoch" in logged, sorted(logged)
        assert f"train/{name}_epoch" in result["metrics"]
    epoch_row = next(row for row in rows if row.get("train/loss_epoch"))
    total = float(epoch_row["train/task_loss_epoch"]) + sum(
        weight * float(epoch_row[f"train/{name}_epoch"])
        for name, weight in (("misa_diff", 0.3), ("misa_sim", 2.0), ("misa_recon", 1.0))
    )
    # the epoch means are means of per-step values: the total is their weighted sum
    assert float(epoch_row["train/loss_epoch"]) == pytest.approx(total, rel=1e-5)


def test_every_parameter_gets_a_gradient_with_a_modality_absent_from_the_whole_batch():
    # DDP's static graph needs the same parameters used in every step, whatever is missing.
    module = fusion().train()
    absent_audio = {**ALL, "audio": [False] * BATCH}
    feats = features(absent_audio)
    feats = {
        m: EncoderOutput(f.tokens.double(), f.mask, f.pooled.double(), f.present)
        for m, f in feats.items()
    }
    output, losses = module.fuse_with_losses(feats)
    (output.sum() + sum(losses.values())).backward()
    unused = [name for name, p in module.named_parameters() if p.grad is None]
    assert unused == []
    # the absent modality's terms are left out, as if it were not fused
    expected = reference_losses(module, feats, absent_audio)
    for name, value in expected.items():
        np.testing.assert_allclose(float(losses[name]), value, rtol=1e-9, err_msg=name)


def test_the_training_path_goes_through_the_module_call():
    # forward hooks (callbacks.modality_balance) read the encoder outputs of training steps
    module = fusion()
    seen = []
    module.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    feats = features()
    feats = {
        m: EncoderOutput(f.tokens.double(), f.mask, f.pooled.double(), f.present)
        for m, f in feats.items()
    }
    module.fuse_with_losses(feats)
    assert seen == [feats]
