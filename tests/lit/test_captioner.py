"""objective=caption: wiring, conditionings, grouped targets, samples, errors."""

import json

import pytest
import torch

from mmexp.assemble import assemble
from mmexp.builders import build_data_and_model
from mmexp.config_check import ConfigError
from mmexp.decoders.base import Memory
from mmexp.eval import evaluate
from mmexp.metrics.captioning import JavaNotFoundError
from mmexp.resolve import resolve_run_config
from mmexp.train import train
from tests.helpers.caption_fixtures import write_karpathy
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.tiny_decoders import write_tiny_gpt2

# A small decoder keeps a run to seconds; the scores are checked by the learning test.
SMALL_DECODER = [
    "objective.decoder.width=64",
    "objective.decoder.depth=1",
    "objective.decoder.heads=2",
]
SMALL = [
    "objective=caption",
    "objective.module.decoding.num_beams=2",
    "objective.module.decoding.max_new_tokens=20",
    "objective.module.test_metrics=[bleu,rouge_l,cider]",
]
FAST = [o for o in FAST_OVERRIDES if o != "trainer.max_epochs=2"] + ["trainer.max_epochs=1"]


def caption_config(tmp_path, data_dir, *overrides, decoder=SMALL_DECODER):
    return compose_config(
        "train", [*FAST, *SMALL, *decoder, *overrides], tmp_path / "run", data_dir
    )


def coco_config(tmp_path, data_dir, root, *overrides):
    """A caption run on the COCO fixture (the shapes sizes of FAST do not apply)."""
    fast = [o for o in FAST if not o.startswith("data.")]
    loader = [
        "data=coco_captions",
        f"data.root={root}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.pin_memory=false",
        "data.batch_size=4",
    ]
    return compose_config("train", [*fast, *SMALL, *loader, *overrides], tmp_path / "run", data_dir)


def test_a_caption_run_scores_its_test_captions_and_writes_them(tmp_path, data_dir):
    cfg = caption_config(tmp_path, data_dir)
    record = train(cfg)
    metrics = record["metrics"]
    for name in ("bleu1", "bleu4", "rouge_l", "cider"):
        assert 0 <= metrics[f"test/{name}"] <= (10 if name == "cider" else 1)
    assert "val/cider_best" in metrics and "train/truncated_epoch" in metrics
    rows = [json.loads(line) for line in (tmp_path / "run" / "captions/test.jsonl").open()]
    assert [row["id"] for row in rows] == list(range(80))  # every test image once
    manifest = {}
    manifest_file = next((data_dir / "shapes").glob("shapes-redundant-*/manifest.jsonl"))
    for line in manifest_file.read_text().splitlines():
        row = json.loads(line)
        if row["split"] == "test":
            manifest[len(manifest)] = row
    for row in rows:
        assert row["references"] == manifest[row["id"]]["captions"]
        assert isinstance(row["prediction"], str)
        assert row["image"].endswith(manifest[row["id"]]["image"])
    # mmexp-eval on the best checkpoint: the same captions and scores, in its own folder
    eval_cfg = compose_config(
        "eval",
        [f"ckpt_path={record['best_checkpoint']}", "logger=csv", "trainer.accelerator=cpu"],
        tmp_path / "eval",
        data_dir,
    )
    scored = evaluate(eval_cfg)["metrics"]
    for name in ("bleu4", "rouge_l", "cider"):
        assert scored[f"test/{name}"] == pytest.approx(metrics[f"test/{name}"], abs=1e-6)
    again = (tmp_path / "eval" / "captions" / "test.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in again] == rows


@pytest.mark.parametrize(
    ("overrides", "length", "width"),
    [
        ([], 16, 128),  # tokens: the CNN's 4 x 4 feature map
        (["objective.module.conditioning=pooled"], 1, 128),
        (["objective.module.conditioning=fused", "fusion=concat"], 1, 128),
        (["objective.module.conditioning=fused_tokens", "fusion=early_tokens"], 17, 128),
    ],
)
def test_each_conditioning_gives_the_decoder_its_memory(
    tmp_path, data_dir, overrides, length, width
):
    cfg = caption_config(tmp_path, data_dir, *overrides)
    datamodule, module = build_data_and_model(cfg)
    uses_fusion = "fusion" in " ".join(overrides)
    assert (module.memory.fusion is not None) == uses_fusion
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    memory = module.condition(batch)
    assert memory.tokens.shape == (80, length, width) and memory.mask.all()


def test_audio_and_image_condition_one_memory(tmp_path, data_dir):
    cfg = caption_config(
        tmp_path,
        data_dir,
        "data.modalities=[image,audio,text]",
        "objective.module.conditioning=pooled",
    )
    datamodule, module = build_data_and_model(cfg)
    assert sorted(module.encoders) == ["audio", "image"]
    datamodule.setup("validate")
    memory = module.condition(next(iter(datamodule.val_dataloader())))
    assert memory.tokens.shape[:2] == (80, 2)  # one pooled vector per conditioning modality


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective.module.conditioning=fused_tokens", "fusion=concat"], "early_tokens"),
        (["objective.module.conditioning=fused", "fusion=late"], "class logits"),
        (["objective.module.conditioning=words"], "objective.conditioning must be one of"),
        (["data.modalities=[image]"], "must hold text"),
    ],
)
def test_conditionings_the_parts_cannot_give_are_refused(tmp_path, data_dir, overrides, message):
    cfg = caption_config(tmp_path, data_dir, *overrides)
    with pytest.raises((ValueError, ConfigError), match=message):
        build_data_and_model(cfg)


def test_grouped_targets_each_read_their_own_images_memory(tmp_path, data_dir):
    root = write_karpathy(tmp_path / "coco")
    cfg = coco_config(tmp_path, data_dir, root, "data.eval_batch_size=3")
    datamodule, module = build_data_and_model(cfg)
    module.eval()
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["group"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    # a memory far apart per image, so that reading another image's changes the loss
    torch.manual_seed(0)
    tokens = 5 * torch.randn(3, 4, module.decoder.memory_dim)
    memory = Memory(tokens, torch.ones(3, 4, dtype=torch.bool))
    with torch.no_grad():
        grouped = module.teacher_forced_loss(batch, memory)
        # the same targets with each image's memory repeated by hand, as a flat batch
        rows = batch["group"]
        flat = {"text": batch["text"], "index": torch.arange(len(rows))}
        expected = module.teacher_forced_loss(flat, Memory(tokens[rows], memory.mask[rows]))
        wrong = module.teacher_forced_loss(flat, Memory(tokens[rows.flip(0)], memory.mask[rows]))
        # the images in another order within the batch: each target still finds its own
        # image by split position, not by batch row
        order = torch.tensor([2, 0, 1])
        permuted = {**batch, "index": batch["index"][order]}
        reordered = module.teacher_forced_loss(permuted, Memory(tokens[order], memory.mask))
    torch.testing.assert_close(grouped, expected)
    torch.testing.assert_close(reordered, grouped)
    assert abs(float(wrong - grouped)) > 1e-3
    assert [len(refs) for refs in batch["references"]] == [5, 6, 5]  # all of each image's


def test_data_without_references_is_named_at_the_first_validation(tmp_path, data_dir):
    cfg = caption_config(tmp_path, data_dir, "data.references_column=null")
    with pytest.raises(KeyError, match="data.references_column"):
        train(cfg)
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "failed" and "references" in record["error"]


def test_java_missing_stops_a_meteor_run_before_training(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr("mmexp.metrics.caption_accumulator.find_java", lambda: None)
    cfg = caption_config(tmp_path, data_dir, "objective.module.test_metrics=[bleu,meteor]")
    with pytest.raises(JavaNotFoundError, match="default-jre-headless"):
        build_data_and_model(cfg)
    # partial: the metrics that need no Java still build
    cfg = caption_config(
        tmp_path,
        data_dir,
        "objective.module.test_metrics=[bleu,meteor]",
        "objective.module.on_missing_java=partial",
    )
    build_data_and_model(cfg)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return write_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.mark.parametrize("decoder", ["gpt2_cross_attention", "clipcap"])
def test_a_language_model_decoder_trains_from_a_local_folder(tmp_path, data_dir, gpt2_dir, decoder):
    cfg = caption_config(
        tmp_path,
        data_dir,
        f"objective/decoder={decoder}",
        f"objective.decoder.name_or_path={gpt2_dir}",
        "objective.module.conditioning=pooled",
        decoder=[],
    )
    record = train(cfg)
    assert record["status"] == "completed"
    assert 0 <= record["metrics"]["test/bleu1"] <= 1


def test_lora_adapts_a_pretrained_decoder_and_trains_its_new_layers(tmp_path, data_dir, gpt2_dir):
    cfg = caption_config(
        tmp_path,
        data_dir,
        "objective/decoder=gpt2_cross_attention",
        f"objective.decoder.name_or_path={gpt2_dir}",
        "finetune=lora",
        decoder=[],
    )
    resolved = resolve_run_config(cfg, "train")
    assert list(resolved.finetune.towers) == ["decoder"]
    run = assemble(resolved, "bench")
    decoder = run.module.decoder
    assert run.lineage["towers"] == ["decoder"]
    trainable = {name for name, p in decoder.named_parameters() if p.requires_grad}
    assert trainable and all(
        "lora_" in name
        or "crossattention" in name
        or "ln_cross_attn" in name
        or "memory_proj" in name
        for name in trainable
    ), sorted(trainable)[:10]
    assert any("lora_" in name for name in trainable)
    # the language model's own weights stay frozen
    assert not decoder.lm.transformer.wte.weight.requires_grad
    # the image tower trains from scratch, untouched by the protocol
    assert all(p.requires_grad for p in run.module.encoders["image"].parameters())
    # a finetuned checkpoint evaluates as its run tested it: the adapters are rebuilt (a
    # strict load of the checkpoint fails otherwise) and give the same captions
    record = train(cfg)
    eval_cfg = compose_config(
        "eval",
        [f"ckpt_path={record['best_checkpoint']}", "logger=csv", "trainer.accelerator=cpu"],
        tmp_path / "eval",
        data_dir,
    )
    evaluate(eval_cfg)
    trained = (tmp_path / "run" / "captions" / "test.jsonl").read_text()
    assert (tmp_path / "eval" / "captions" / "test.jsonl").read_text() == trained


def test_the_feature_cache_is_refused_with_its_key(tmp_path, data_dir):
    cfg = caption_config(tmp_path, data_dir, "feature_cache.enabled=true")
    with pytest.raises(ValueError, match="feature_cache.enabled"):
        assemble(resolve_run_config(cfg, "train"), "train")


def test_a_grouped_target_without_its_sample_is_named(tmp_path, data_dir):
    root = write_karpathy(tmp_path / "coco")
    cfg = coco_config(tmp_path, data_dir, root, "data.eval_batch_size=3")
    datamodule, module = build_data_and_model(cfg)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    broken = {**batch, "group": batch["group"].clone()}
    broken["group"][-1] = 99
    memory = Memory(
        torch.zeros(3, 1, module.decoder.memory_dim), torch.ones(3, 1, dtype=torch.bool)
    )
    with pytest.raises(ValueError, match=r"samples \[99\]"):
        module.teacher_forced_loss(broken, memory)
