"""Finetuning protocols: what loads, what trains, what is recorded, what is refused."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mmexp.assemble import assemble
from mmexp.builders import build_data_and_model
from mmexp.encoders.freezing import count_parameters
from mmexp.eval import evaluate
from mmexp.finetune.source import download_wandb_artifact
from mmexp.resolve import resolve_run_config
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.wandb_offline import read_offline_run

# A narrower text tower than the default, to show that finetuning adopts the pretraining
# run's encoder config rather than the one composed for the finetune run.
PRETRAIN = [
    "objective=contrastive",
    "trainer.max_epochs=1",
    "model.encoders.text.width=64",
    "seed=0",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data_dir) -> str:
    cfg = compose_config(
        "train", [*FAST_OVERRIDES, *PRETRAIN], tmp_path_factory.mktemp("pretrain"), data_dir
    )
    return train(cfg)["last_checkpoint"]


def built(make_train_cfg, *overrides):
    cfg = resolve_run_config(make_train_cfg(*overrides), "train")
    run = assemble(cfg, "bench")  # built and finetuned, without the training extras
    return cfg, run.module, run.lineage


def trainable(module: torch.nn.Module) -> int:
    return count_parameters(module)[0]


def pretrained_weights(path: str, modality: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)["state_dict"]
    prefix = f"encoders.{modality}."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def test_full_loads_the_towers_and_adopts_their_config(make_train_cfg, checkpoint):
    cfg, model, lineage = built(
        make_train_cfg, "finetune=full", f"finetune.checkpoint={checkpoint}"
    )
    assert cfg.model.encoders.text.width == 64  # from the pretraining run, not the default
    for modality in ("image", "text"):
        state = model.encoders[modality].state_dict()
        for key, value in pretrained_weights(checkpoint, modality).items():
            torch.testing.assert_close(state[key], value)
        assert trainable(model.encoders[modality]) == count_parameters(model.encoders[modality])[1]
    assert lineage["towers_from_checkpoint"] == ["image", "text"]
    assert lineage["run"]["objective"] == "ContrastivePretrainer"


def test_frozen_keeps_towers_fixed_through_training(make_train_cfg, checkpoint):
    cfg = make_train_cfg(
        "finetune=frozen", f"finetune.checkpoint={checkpoint}", "logger=many", run_name="frozen"
    )
    result = train(cfg)
    finetuned = torch.load(result["last_checkpoint"], weights_only=True)["state_dict"]
    for modality in ("image", "text"):
        for key, value in pretrained_weights(checkpoint, modality).items():
            # BatchNorm statistics too: frozen towers run in eval mode.
            torch.testing.assert_close(finetuned[f"encoders.{modality}.{key}"], value)
    initial = make_train_cfg("finetune=frozen", f"finetune.checkpoint={checkpoint}")
    _, model, _ = built(lambda *o: initial)
    assert any(
        not torch.equal(finetuned[f"head.{k}"], v) for k, v in model.head.state_dict().items()
    )  # the head did train
    model.train()
    assert not model.encoders["image"].training and model.head.training
    record = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert record["pretrained_from"]["protocol"] == "frozen"
    assert record["pretrained_from"]["checkpoint"] == checkpoint
    run = read_offline_run(next(Path(cfg.paths.output_dir).glob("wandb/offline-run-*")))
    assert run["config"]["run"]["pretrained_from"]["run"]["objective"] == "ContrastivePretrainer"


def test_linear_probe_trains_only_a_linear_head(make_train_cfg, checkpoint):
    _, model, _ = built(
        make_train_cfg, "finetune=linear_probe", f"finetune.checkpoint={checkpoint}"
    )
    assert isinstance(model.head, torch.nn.Linear)
    assert trainable(model) == trainable(model.head) > 0
    with pytest.raises(ValueError, match="linear_probe.*GatedMultimodalUnit|linear_probe: fusion"):
        built(
            make_train_cfg,
            "finetune=linear_probe",
            f"finetune.checkpoint={checkpoint}",
            "fusion=gated",
        )


def test_partial_trains_the_last_blocks_and_what_follows(make_train_cfg, checkpoint):
    _, model, _ = built(make_train_cfg, "finetune=partial", f"finetune.checkpoint={checkpoint}")
    text = model.encoders["text"]
    flags = {name: p.requires_grad for name, p in text.named_parameters()}
    assert flags["encoder.layers.1.linear1.weight"] and flags["proj.weight"]
    assert not flags["encoder.layers.0.linear1.weight"] and not flags["embed.weight"]
    image = dict(model.encoders["image"].named_parameters())
    assert image["stages.2.0.weight"].requires_grad and image["proj.weight"].requires_grad
    assert not image["stages.0.0.weight"].requires_grad
    # What trains is in training mode, what is frozen in eval mode, after module.train().
    model.train()
    assert text.get_submodule("norm").training and text.get_submodule("proj").training
    assert text.get_submodule("encoder.layers.1").training
    assert not text.get_submodule("encoder.layers.0").training and not text.embed.training
    for modality, encoder in model.encoders.items():
        for name, part in encoder.named_modules():
            own = list(part.parameters(recurse=False))
            if own:
                trains = {p.requires_grad for p in own}
                assert trains == {part.training}, f"{modality}.{name}"


def test_lora_adapts_the_towers_without_changing_them_at_start(make_train_cfg, checkpoint):
    cfg, reference, _ = built(make_train_cfg, "finetune=full", f"finetune.checkpoint={checkpoint}")
    _, model, _ = built(
        make_train_cfg, "finetune=lora", f"finetune.checkpoint={checkpoint}", "finetune.r=4"
    )
    for modality in ("image", "text"):
        names = [n for n, p in model.encoders[modality].named_parameters() if p.requires_grad]
        assert names and all("lora_" in n for n in names), names
    text_adapters = {
        n.split(".lora_")[0] for n, _ in model.encoders["text"].named_parameters() if "lora_" in n
    }
    assert "encoder.layers.0.linear1" in text_adapters
    assert not any(n.endswith("out_proj") for n in text_adapters)  # bypassed by attention
    datamodule, _ = build_data_and_model(cfg)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    reference.eval()
    model.eval()
    with torch.no_grad():  # LoRA's B starts at zero: the adapted tower computes the same
        for modality in ("image", "text"):
            torch.testing.assert_close(
                model.encoders[modality](batch[modality]).pooled,
                reference.encoders[modality](batch[modality]).pooled,
            )


def test_a_finetuned_lora_checkpoint_evaluates_to_the_same_metrics(
    make_train_cfg, checkpoint, tmp_path, data_dir
):
    result = train(
        make_train_cfg("finetune=lora", f"finetune.checkpoint={checkpoint}", run_name="lora")
    )
    cfg = compose_config(
        "eval",
        [f"ckpt_path={result['best_checkpoint']}", "logger=csv", "trainer.accelerator=cpu"],
        tmp_path / "eval",
        data_dir,
    )
    evaluated = evaluate(cfg)
    assert evaluated["metrics"]["test/acc"] == pytest.approx(result["metrics"]["test/acc"])


def test_protocols_need_a_pretrained_tower(make_train_cfg):
    with pytest.raises(ValueError, match="finetune=frozen: no pretrained tower"):
        built(make_train_cfg, "finetune=frozen")


def test_missing_checkpoint_is_named(make_train_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="finetune.checkpoint: no checkpoint file"):
        built(make_train_cfg, "finetune=full", f"finetune.checkpoint={tmp_path}/nope.ckpt")


def test_checkpoint_without_the_data_modalities_is_refused(make_train_cfg, checkpoint):
    with pytest.raises(ValueError, match="none of data.modalities"):
        built(
            make_train_cfg,
            "finetune=full",
            f"finetune.checkpoint={checkpoint}",
            "data.modalities=[audio]",
            "fusion=unimodal_audio",
        )


class FakeArtifact:
    def __init__(self, source: str) -> None:
        self.source = source

    def download(self, root: str) -> str:
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "model.ckpt").write_bytes(Path(self.source).read_bytes())
        return root


def test_wandb_artifact_reference_is_downloaded_and_recorded(
    make_train_cfg, checkpoint, monkeypatch
):
    import wandb

    download_wandb_artifact.cache_clear()  # fetched once per process
    requested = []

    class FakeApi:
        def artifact(self, name, type=None):  # noqa: A002 - wandb's argument name
            requested.append((name, type))
            return FakeArtifact(checkpoint)

    monkeypatch.setattr(wandb, "Api", FakeApi)
    reference = "wandb:lab/mmexp/model-abc123:best"
    _, model, lineage = built(
        make_train_cfg, "finetune=frozen", f"finetune.checkpoint='{reference}'"
    )
    assert requested == [("lab/mmexp/model-abc123:best", "model")]
    assert lineage["checkpoint"] == reference and lineage["path"].endswith("model.ckpt")
    assert trainable(model.encoders["text"]) == 0


def test_unreachable_wandb_artifact_says_how_to_fetch_it(make_train_cfg, monkeypatch):
    import wandb

    class OfflineApi:
        def artifact(self, name, type=None):  # noqa: A002
            raise ConnectionError("no network")

    monkeypatch.setattr(wandb, "Api", OfflineApi)
    with pytest.raises(RuntimeError, match="wandb artifact get lab/p/m:v0 --root"):
        built(make_train_cfg, "finetune=full", "finetune.checkpoint='wandb:lab/p/m:v0'")


def test_finetune_config_group_composes(make_train_cfg):
    for protocol in ("full", "frozen", "linear_probe", "partial", "lora"):
        cfg = make_train_cfg(f"finetune={protocol}")
        assert OmegaConf.select(cfg, "finetune.checkpoint") is None


def test_a_contrastive_checkpoint_starts_a_captioners_image_tower(make_train_cfg, checkpoint):
    # the captioner encodes images only: the pretrained text tower is not adopted, and the
    # decoder trains from scratch beside the frozen image tower
    cfg, model, lineage = built(
        make_train_cfg,
        "objective=caption",
        "finetune=frozen",
        f"finetune.checkpoint={checkpoint}",
    )
    assert list(model.encoders) == ["image"]
    assert lineage["towers_from_checkpoint"] == ["image"] and lineage["towers"] == ["image"]
    state = model.encoders["image"].state_dict()
    for key, value in pretrained_weights(checkpoint, "image").items():
        torch.testing.assert_close(state[key], value)
    assert trainable(model.encoders["image"]) == 0
    assert trainable(model.decoder) == count_parameters(model.decoder)[1] > 0
