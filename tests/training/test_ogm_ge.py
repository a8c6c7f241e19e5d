"""OGM-GE: the paper's coefficients, and the gradients the callback leaves to the optimizer."""

from __future__ import annotations

import csv
import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from mmexp.encoders.base import output_from
from mmexp.fusion import SumFusion
from mmexp.train import train
from mmexp.training.ogm_ge import OGMGE, discrepancy_ratios, modulation_coefficients

WIDTH, CLASSES, BATCH = 6, 3, 40


def test_coefficients_follow_the_papers_formula_on_a_hand_computed_case():
    # s_a = 30, s_v = 20: rho_a = 1.5, rho_v = 2/3; with alpha = 0.5 the dominant audio gets
    # k_a = 1 - tanh(0.75) = 1 - (e^1.5 - 1) / (e^1.5 + 1) = 1 - 3.481689 / 5.481689
    ratios = discrepancy_ratios({"audio": 30.0, "visual": 20.0})
    assert ratios == pytest.approx({"audio": 1.5, "visual": 2 / 3})
    coefficients = modulation_coefficients(ratios, alpha=0.5)
    assert coefficients["audio"] == pytest.approx(0.364851, abs=1e-6)
    assert coefficients["visual"] == 1.0
    # the ratio itself goes into tanh (Eq. 10), not its excess over 1: just above parity the
    # dominant modality is already scaled by 1 - tanh(alpha)
    just_above = modulation_coefficients({"a": 1.0001, "b": 0.9999}, alpha=0.5)
    assert just_above["a"] == pytest.approx(1 - math.tanh(0.5), abs=1e-4)
    assert just_above["b"] == 1.0
    # equal confidences: nobody is modulated
    assert modulation_coefficients({"a": 1.0, "b": 1.0}, alpha=0.5) == {"a": 1.0, "b": 1.0}


def test_with_three_modalities_the_ratio_is_over_the_mean_of_the_others():
    ratios = discrepancy_ratios({"a": 30.0, "b": 20.0, "c": 10.0})
    assert ratios == pytest.approx({"a": 2.0, "b": 1.0, "c": 0.4})


class TwoTowers(pl.LightningModule):
    """Linear towers to class logits, summed: tower ``m`` alone predicts ``W_m x``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoders = nn.ModuleDict(
            {"a": nn.Linear(WIDTH, CLASSES), "b": nn.Linear(WIDTH, CLASSES)}
        )
        with torch.no_grad():
            # tower a reads the label off the input: confident and right, the dominant one
            self.encoders["a"].weight.copy_(2 * torch.eye(CLASSES, WIDTH))
        self.fusion = SumFusion(["a", "b"], CLASSES)

    def encode(self, batch: dict) -> dict:
        return {m: output_from(tower(batch["x"])) for m, tower in self.encoders.items()}

    def predict_from_features(self, features: dict) -> torch.Tensor:
        return self.fusion(features)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self.predict_from_features(self.encode(batch)), batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Gradients(Callback):
    """The encoders' gradients as this callback sees them before the optimizer step."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.seen.append({n: p.grad.clone() for n, p in pl_module.encoders.named_parameters()})


def batch_rows(seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    x = torch.randn(BATCH, WIDTH, generator=generator) + 2 * F.one_hot(labels, WIDTH)
    return [{"x": x[i], "label": labels[i]} for i in range(BATCH)]


def one_step(ogm: OGMGE, seed: int = 0) -> tuple[TwoTowers, dict, dict]:
    """Train one step; the gradients before and after OGM-GE, and the module before it."""
    before, after = Gradients(), Gradients()
    module = TwoTowers()
    start = TwoTowers()
    start.load_state_dict(module.state_dict())
    pl.seed_everything(seed)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        callbacks=[before, ogm, after],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(batch_rows(), batch_size=BATCH))
    return start, before.seen[0], after.seen[0]


def expected_coefficients(module: TwoTowers, alpha: float) -> dict[str, float]:
    """The reference's computation: sum over the batch of softmax(f_m(x))[y], per tower."""
    rows = batch_rows()
    x = torch.stack([r["x"] for r in rows])
    labels = torch.stack([r["label"] for r in rows])
    with torch.no_grad():
        scores = {
            m: float(F.softmax(tower(x), dim=1)[torch.arange(BATCH), labels].sum())
            for m, tower in module.encoders.items()
        }
    rho = {"a": scores["a"] / scores["b"], "b": scores["b"] / scores["a"]}
    return {m: 1 - math.tanh(alpha * r) if r > 1 else 1.0 for m, r in rho.items()}


def test_the_dominant_towers_gradient_is_scaled_by_its_coefficient():
    ogm = OGMGE(alpha=0.5, noise=False)
    start, before, after = one_step(ogm)
    expected = expected_coefficients(start, alpha=0.5)
    assert expected["a"] < 0.9 and expected["b"] == 1.0  # the case is one of modulation
    assert ogm.last_coefficients == pytest.approx(expected, rel=1e-5)
    for name, grad in before.items():
        tower = name.split(".")[0]
        torch.testing.assert_close(after[name], grad * expected[tower])


def test_generalisation_enhancement_adds_noise_of_each_gradients_own_spread():
    ogm = OGMGE(alpha=0.5, noise=True)
    start, before, after = one_step(ogm)
    expected = expected_coefficients(start, alpha=0.5)
    for name, grad in before.items():
        noise = after[name] - grad * expected[name.split(".")[0]]
        assert noise.abs().sum() > 0, name  # both modalities get noise, the unmodulated too
        if grad.numel() >= 18:
            # std of 18 draws from N(0, std(g)^2): within a factor of 2 of std(g)
            assert 0.5 < float(noise.std() / grad.std()) < 2.0, name
    # seeded: the same run draws the same noise
    _, _, again = one_step(OGMGE(alpha=0.5, noise=True))
    for name in after:
        torch.testing.assert_close(again[name], after[name])


def test_outside_the_modulation_epochs_the_gradients_are_left_alone():
    start, before, after = one_step(OGMGE(alpha=0.5, modulation_starts=1, modulation_ends=3))
    for name, grad in before.items():
        torch.testing.assert_close(after[name], grad)


def test_conv_only_modulation_refuses_towers_without_conv_weights():
    with pytest.raises(ValueError, match="the a encoder .* has no such trainable parameters"):
        one_step(OGMGE(parameters="conv"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "must be positive"),
        ({"parameters": "linear"}, "parameters='linear'"),
        ({"modulation_starts": 5, "modulation_ends": 2}, "before modulation_starts=5"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OGMGE(**kwargs)


def test_a_run_with_one_modality_is_refused_before_training(make_train_cfg):
    cfg = make_train_cfg("training=ogm_ge", "data.modalities=[image]", "fusion=concat")
    with pytest.raises(ValueError, match="modulates two or more modalities"):
        train(cfg)


def test_a_run_logs_each_modalitys_coefficient_and_ratio(make_train_cfg, caplog):
    cfg = make_train_cfg("training=ogm_ge", "data.modalities=[image,audio]")
    with caplog.at_level("WARNING", logger="mmexp.training.ogm_ge"):
        train(cfg)
    # the default optimizer is AdamW: the run says the modulation is partly absorbed
    assert "adaptive optimizer (AdamW)" in caplog.text
    with open(f"{cfg.paths.output_dir}/csv/metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for modality in ("image", "audio"):
        coefficients = [
            float(r[f"ogm_ge/{modality}/coeff_step"])
            for r in rows
            if r.get(f"ogm_ge/{modality}/coeff_step")
        ]
        assert coefficients and all(0 < c <= 1 for c in coefficients)
        assert any(r.get(f"ogm_ge/{modality}/ratio_epoch") for r in rows)


def test_the_balance_probes_read_the_steps_own_features_beside_ogm_ge(make_train_cfg):
    # OGM-GE's own passes (one modality marked absent) must not replace the features the
    # modality-balance callback probes: each probe is logged, not NaN
    cfg = make_train_cfg(
        "training=ogm_ge",
        "data.modalities=[image,audio]",
        "+callbacks.modality_balance._target_=mmexp.lit.modality_balance.ModalityBalance",
    )
    train(cfg)
    with open(f"{cfg.paths.output_dir}/csv/metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for modality in ("image", "audio"):
        probes = [
            float(r[f"balance/{modality}/probe_acc"])
            for r in rows
            if r.get(f"balance/{modality}/probe_acc")
        ]
        assert len(probes) == 2, modality
