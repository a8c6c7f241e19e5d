"""Every fusion config plugs into the classifier through the builder, on real batches."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import MissingConfigException
from torch import nn

from mmexp.builders import build_data_and_model, check_fusion
from mmexp.fusion.cost import count_params
from mmexp.train import train
from tests.helpers.configs import compose_config
from tests.helpers.fusion import modalities_override, widest_modalities

CONF = Path(__file__).resolve().parents[2] / "conf"
STRATEGIES = sorted(p.stem for p in (CONF / "fusion").glob("*.yaml"))


@pytest.mark.parametrize("fusion", STRATEGIES)
def test_strategy_trains_one_step_with_the_most_modalities_it_takes(make_train_cfg, fusion):
    # Three modalities, or two for the strategies defined for two (the bilinear poolings).
    modalities = widest_modalities(fusion)
    cfg = make_train_cfg(f"fusion={fusion}", modalities_override(modalities), "model.width=32")
    datamodule, model = build_data_and_model(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    logits = model(batch)
    assert logits.shape == (len(batch["label"]), datamodule.num_classes)
    model.loss_fn(logits, batch["label"]).backward()
    touched = {
        name
        for name, encoder in model.encoders.items()
        if any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    }
    if fusion.startswith("unimodal"):  # unimodal (first modality) or unimodal_<modality>
        expected = {fusion.removeprefix("unimodal").lstrip("_") or "image"}
    else:
        expected = set(modalities)
    assert touched == expected
    assert isinstance(model.head, nn.Identity) == model.fusion.produces_logits


def test_match_params_budgets_fusion_and_head(make_train_cfg):
    budget = 60_000
    for fusion in ("tensor", "concat"):  # concat has no weights: its head is scaled
        cfg = make_train_cfg(f"fusion={fusion}", f"fusion.match_params={budget}")
        _, model = build_data_and_model(cfg)
        params = count_params(model.fusion) + count_params(model.head)
        assert 0.95 * budget <= params <= budget, fusion
    result = train(make_train_cfg("fusion=tensor", f"fusion.match_params={budget}"))
    cost = result["fusion_cost"]
    assert cost["params"] + cost["head_params"] == cost["trainable_params"]
    assert 0.95 * budget <= cost["trainable_params"] <= budget


def test_late_fusion_auxiliary_losses_train_each_modality_on_the_label(make_train_cfg):
    cfg = make_train_cfg("fusion=late", "fusion.aux_weight=0.5")
    datamodule, model = build_data_and_model(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    model.eval()  # no dropout: the two computations see the same classifiers
    logits, loss, parts = model._training_losses(batch)
    features = model.encode(batch)
    own = [model.fusion.classifiers[m](features[m].pooled) for m in ("image", "text")]
    labels = batch["label"]
    fused = (own[0] + own[1]) / 2
    expected = (
        F.cross_entropy(fused, labels)
        + 0.5 * (F.cross_entropy(own[0], labels) + F.cross_entropy(own[1], labels)) / 2
    )
    torch.testing.assert_close(logits, fused)
    torch.testing.assert_close(loss, expected)
    assert parts == {}  # no losses of the strategy's own
    # Validation and test score the fused prediction alone.
    torch.testing.assert_close(model._shared_step(batch)[1], F.cross_entropy(fused, labels))


def test_impossible_combination_fails_before_data_with_valid_choices(make_train_cfg):
    cfg = make_train_cfg("fusion=mult", "data.modalities=[image]")
    with pytest.raises(ValueError, match=r"at least 2 modalities.*fusion=\[.*'concat'.*\]"):
        check_fusion(cfg)
    with pytest.raises(ValueError, match="MulTFusion"):
        train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert saved["status"] == "failed" and "fusion" in saved["error"]


def test_unknown_strategy_lists_the_choices(tmp_path):
    # Composed as mmexp-train composes (Hydra's message is what the command prints), without
    # the seconds a new process spends importing.
    with pytest.raises(MissingConfigException) as caught:
        compose_config("train", ["fusion=no_such_fusion"], tmp_path / "run", tmp_path / "data")
    message = str(caught.value)
    assert "Available options in 'fusion'" in message
    assert all(name in message for name in ("tensor", "low_rank", "cross_attention"))


def test_late_fusion_run_records_its_cost(make_train_cfg):
    result = train(make_train_cfg("fusion=late", "fusion.combine=poe"))
    assert result["status"] == "completed"
    cost = result["fusion_cost"]
    assert cost["params"] > 0 and cost["flops_per_sample"] > 0
    # The per-modality classifiers are the fusion; the head after it is the identity.
    assert cost["head_params"] == 0 and cost["trainable_params"] == cost["params"]
    assert torch.isfinite(torch.tensor(result["metrics"]["test/acc"]))
