"""The modality-balance callback: gradient ratios, probes and OGM-GE scores it logs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from sklearn.linear_model import RidgeClassifier
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from mmexp.encoders.base import output_from
from mmexp.fusion import ConcatFusion, SumFusion
from mmexp.lit.balance_measures import encoder_grad_norms, ridge_probe, unimodal_scores
from mmexp.lit.modality_balance import ModalityBalance

WIDTH, CLASSES = 8, 3


def rows(count: int, seed: int) -> list[dict]:
    """``x`` inputs, ``signal`` features that show the label, ``noise`` that do not."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    signal = 3 * F.one_hot(labels, WIDTH).float() + torch.randn(count, WIDTH, generator=generator)
    noise = torch.randn(count, WIDTH, generator=generator)
    x = torch.randn(count, WIDTH, generator=generator)
    return [
        {"x": x[i], "signal": signal[i], "noise": noise[i], "label": labels[i]}
        for i in range(count)
    ]


class Boosted(pl.LightningModule):
    """Two identical linear towers on the same input; tower ``a``'s output is scaled 10x.

    The loss is linear in the towers' weights (a frozen head, the sum of the logits), so
    the gradient of ``a`` is exactly ten times that of ``b`` at every step.
    """

    def __init__(self) -> None:
        super().__init__()
        tower = nn.Linear(WIDTH, WIDTH, bias=False)
        self.encoders = nn.ModuleDict({"a": tower, "b": nn.Linear(WIDTH, WIDTH, bias=False)})
        self.encoders["b"].load_state_dict(tower.state_dict())
        self.fusion = SumFusion(["a", "b"], WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES).requires_grad_(False)

    def encode(self, batch: dict) -> dict:
        return {
            "a": output_from(10 * self.encoders["a"](batch["x"])),
            "b": output_from(self.encoders["b"](batch["x"])),
        }

    def predict_from_features(self, features: dict) -> torch.Tensor:
        return self.head(self.fusion(features))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.predict_from_features(self.encode(batch)).sum()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.predict_from_features(self.encode(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.01)


class SignalAndNoise(Boosted):
    """Parameter-free towers passing the ``signal`` and ``noise`` features through."""

    def __init__(self) -> None:
        pl.LightningModule.__init__(self)
        self.encoders = nn.ModuleDict({"signal": nn.Identity(), "noise": nn.Identity()})
        self.fusion = ConcatFusion(["signal", "noise"], WIDTH)
        self.head = nn.Linear(2 * WIDTH, CLASSES)

    def encode(self, batch: dict) -> dict:
        return {m: output_from(batch[m]) for m in ("signal", "noise")}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.predict_from_features(self.encode(batch))
        return F.cross_entropy(logits, batch["label"])


def fit(module: pl.LightningModule, folder: Path, epochs: int = 1) -> list[dict]:
    """Train with the callback and a CSV logger; the rows of ``metrics.csv``."""
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=CSVLogger(folder, name="csv", version=""),
        callbacks=[ModalityBalance()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(
        module,
        DataLoader(rows(300, seed=0), batch_size=50, shuffle=True),
        DataLoader(rows(150, seed=1), batch_size=50),
    )
    with (folder / "csv" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def logged(table: list[dict], key: str) -> list[float]:
    return [float(row[key]) for row in table if row.get(key)]


def test_a_tower_with_ten_times_the_gradient_shows_in_the_ratio(tmp_path) -> None:
    table = fit(Boosted(), tmp_path, epochs=2)
    ratios = logged(table, "balance/ratio/a_over_b")
    assert ratios == pytest.approx([10.0, 10.0], rel=1e-4)
    norms_a, norms_b = logged(table, "balance/a/grad_norm"), logged(table, "balance/b/grad_norm")
    assert len(norms_a) == 2 and all(b > 0 for b in norms_b)
    assert {"balance/a/probe_acc", "balance/a/score", "balance/score_ratio/a_over_b"} <= set(
        table[0]
    )


def test_probe_tells_an_informative_modality_from_noise(tmp_path) -> None:
    table = fit(SignalAndNoise(), tmp_path)
    (signal,) = logged(table, "balance/signal/probe_acc")
    (noise,) = logged(table, "balance/noise/probe_acc")
    assert signal > 0.9
    assert noise < 0.5  # chance is 1/3
    # Parameter-free towers have no gradient: no ratio to divide by zero.
    assert logged(table, "balance/signal/grad_norm") == [0.0]
    assert not logged(table, "balance/ratio/signal_over_noise")


@pytest.mark.parametrize("classes", [2, 4])
def test_ridge_probe_predicts_as_scikit_learn(classes) -> None:
    generator = torch.Generator().manual_seed(classes)
    train_y = torch.arange(120) % classes
    test_y = torch.arange(60) % classes
    train_x = torch.randn(120, 6, generator=generator) + train_y[:, None].float()
    test_x = torch.randn(60, 6, generator=generator) + test_y[:, None].float()
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False)
    reference = RidgeClassifier(alpha=2.0).fit(((train_x - mean) / std).numpy(), train_y.numpy())
    expected = reference.score(((test_x - mean) / std).numpy(), test_y.numpy())
    assert ridge_probe(train_x, train_y, test_x, test_y, alpha=2.0) == pytest.approx(expected)
    with pytest.raises(ValueError, match="needs training and test rows"):
        ridge_probe(train_x[:0], train_y[:0], test_x, test_y)


def test_unimodal_scores_are_the_true_class_probability_with_one_modality() -> None:
    module = SignalAndNoise()
    batch = {key: torch.stack([r[key] for r in rows(5, seed=2)]) for key in rows(1, 0)[0]}
    features = module.encode(batch)
    scores = unimodal_scores(module, features, batch["label"])
    weight, bias = module.head.weight, module.head.bias
    # Concatenation and a linear head: the modality's block of the weights plus the bias
    # (OGM-GE uses half the bias).
    alone = batch["signal"] @ weight[:, :WIDTH].T + bias
    expected = alone.softmax(1).gather(1, batch["label"][:, None])[:, 0]
    torch.testing.assert_close(scores["signal"], expected.detach())
    assert scores["noise"].shape == (5,)


def test_grad_norms_of_each_encoder() -> None:
    module = Boosted()
    module.training_step({"x": torch.ones(2, WIDTH)}, 0).backward()
    norms = encoder_grad_norms(module)
    expected = module.encoders["b"].weight.grad.norm()
    assert norms["b"] == pytest.approx(float(expected))
    assert norms["a"] == pytest.approx(10 * float(expected), rel=1e-5)


def test_a_tiny_training_logs_every_key_each_epoch(tmp_path, data_dir) -> None:
    from tests.helpers.tiny_runs import train_tiny

    folder = tmp_path / "run"
    train_tiny(folder, data_dir, "callbacks=[default,modality_balance]", "trainer.max_epochs=2")
    with (folder / "csv" / "metrics.csv").open() as handle:
        table = list(csv.DictReader(handle))
    keys = {
        f"balance/{m}/{value}"
        for m in ("image", "text")
        for value in ("probe_acc", "grad_norm", "score")
    }
    keys |= {"balance/ratio/image_over_text", "balance/score_ratio/image_over_text"}
    for key in sorted(keys):
        values = logged(table, key)
        assert len(values) == 2, key
        assert all(value >= 0 for value in values)
