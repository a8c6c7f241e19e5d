"""Contrastive pretraining runs: CLIP, SigLIP and ITM objectives, checkpoints, errors."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmexp.builders import build_module, encoder_processors, instantiate_datamodule
from mmexp.config_check import ConfigError
from mmexp.encoders.base import EncoderOutput
from mmexp.eval import evaluate
from mmexp.lit.heads import MLPHead
from mmexp.losses import sample_hard_negatives, sample_random_negatives
from mmexp.losses.itm import MatchingLoss
from mmexp.train import train
from tests.helpers.configs import compose_config
from tests.helpers.wandb_offline import read_offline_run

CONF = Path(__file__).resolve().parents[2] / "conf"

RECALLS = [f"r@{k}_{d}" for k in (1, 5, 10) for d in ("i2t", "t2i")]


def test_clip_pretraining_logs_retrieval_and_checkpoints_its_provenance(make_train_cfg):
    cfg = make_train_cfg(
        "objective=contrastive", "logger=many", "trainer.max_epochs=2", "task_name=pretrain"
    )
    result = train(cfg)
    metrics = result["metrics"]
    for name in RECALLS:
        assert 0 <= metrics[f"val/{name}"] <= 1 and 0 <= metrics[f"test/{name}"] <= 1
    assert metrics["test/gallery_size"] == 80  # the whole test split, each sample once
    assert metrics["val/rsum_best"] >= metrics["val/rsum"]
    assert metrics["train/temperature"] != pytest.approx(0.07)  # learned
    assert result["monitor"] == "val/rsum"
    checkpoint = torch.load(result["best_checkpoint"], weights_only=True)
    provenance = checkpoint["mmexp_provenance"]
    assert provenance["objective"] == "ContrastivePretrainer"
    assert provenance["run_dir"] == cfg.paths.output_dir
    run = read_offline_run(next(Path(cfg.paths.output_dir).glob("wandb/offline-run-*")))
    assert provenance["wandb"]["id"] == run["run"]["id"]  # the finetune run can point at it
    assert run["run"]["job_type"] == "pretrain"
    assert 0 <= run["summary"]["test/r@1_i2t"] <= 1


def test_siglip_learns_its_scale_and_bias_and_retrieves_above_chance(make_train_cfg):
    # SigLIP's -10 bias starts every pair far on the "no match" side: it needs more pairs
    # than the CLIP loss to align (r@10 0.20 on 240 pairs, 0.65 on 800, 6 epochs)
    cfg = make_train_cfg(
        "objective=contrastive",
        "objective/loss=siglip",
        "trainer.max_epochs=6",
        "data.num_train=800",
    )
    result = train(cfg)
    saved = (Path(cfg.paths.output_dir) / "config.yaml").read_text()
    assert "mmexp.losses.SigLipLoss" in saved
    state = torch.load(result["best_checkpoint"], weights_only=True)["state_dict"]
    (scale,) = [value for key, value in state.items() if key.endswith("log_logit_scale")]
    (bias,) = [value for key, value in state.items() if key.endswith("logit_bias")]
    # both trained away from SigLIP's initial 10 and -10 (a frozen one keeps it exactly;
    # after 6 epochs the bias has moved by about 0.01 and the scale by more)
    assert abs(float(scale.exp()) - 10.0) > 1e-3, float(scale.exp())
    assert abs(float(bias) + 10.0) > 1e-3, float(bias)
    # 80 test images, one caption each: a random ranking finds the caption in the top 10
    # one time in eight
    chance = 10 / cfg.data.num_test
    for direction in ("i2t", "t2i"):
        recall = result["metrics"][f"test/r@10_{direction}"]
        assert recall > chance + 0.3, (direction, recall)


@pytest.mark.slow  # a learning test: 12 epochs of matching
def test_itm_learns_to_match_well_above_the_no_match_rate(make_train_cfg):
    # 1/3 of the scored pairs match: always answering "no match" scores 2/3 (the rate the
    # linear head on concat sat at, and ALBEF's mined negatives from scratch do).
    result = train(
        make_train_cfg(
            "objective=itm",
            "data.num_train=800",
            "data.num_val=200",
            "data.eval_batch_size=200",
            "trainer.max_epochs=5",
        )
    )
    metrics = result["metrics"]
    assert metrics["val/itm_acc"] > 0.8, metrics["val/itm_acc"]
    state = torch.load(result["best_checkpoint"], weights_only=True)["state_dict"]
    assert any(key.startswith("matching.fusion.layers.") for key in state)  # cross_attention
    assert "matching.head.1.weight" in state  # the model.head MLP after its LayerNorm


@pytest.mark.slow
def test_itm_reaches_ninety_percent_on_the_default(make_train_cfg):
    # The README's `mmexp-train objective=itm` on the embedded default: every data and
    # trainer setting at its shipped value (2000 pairs, 12 epochs).
    cfg = make_train_cfg(
        "objective=itm",
        "data.num_train=2000",
        "data.num_val=500",
        "data.num_test=500",
        "data.batch_size=64",
        "trainer.max_epochs=12",
    )
    metrics = train(cfg)["metrics"]
    assert metrics["val/itm_acc"] >= 0.9, metrics["val/itm_acc"]


def test_matching_negatives_skip_same_content_pairs():
    # Rows 0 and 1 show the same content (masked to -inf): neither is drawn as the other's
    # negative, by either rule; every other column is.
    torch.manual_seed(0)
    logits = torch.randn(4, 4)
    logits[0, 1] = logits[1, 0] = float("-inf")
    for sample in (sample_hard_negatives, sample_random_negatives):
        draws = torch.stack([sample(logits) for _ in range(300)])
        assert not (draws == torch.arange(4)).any()
        assert not (draws[:, 0] == 1).any() and not (draws[:, 1] == 0).any()
        assert set(draws[:, 2].tolist()) == {0, 1, 3}
    uniform = torch.stack(
        [sample_random_negatives(torch.tensor([[0.0, 50.0, -50.0]] * 3)) for _ in range(3000)]
    )[:, 0]
    # Random negatives ignore the similarities: columns 1 and 2 about equally often.
    assert abs((uniform == 1).float().mean() - 0.5) < 0.05
    # A confident row whose off-diagonal softmax mass underflows falls back to the allowed
    # columns only (column 2), never to the masked same-content one.
    confident = torch.tensor(
        [[1000.0, float("-inf"), 0.0], [float("-inf"), 1000.0, 0.0], [0.0, 0.0, 1000.0]]
    )
    draws = torch.stack([sample_hard_negatives(confident) for _ in range(200)])
    assert (draws[:, 0] == 2).all() and (draws[:, 1] == 2).all()
    assert set(draws[:, 2].tolist()) == {0, 1}


def test_shapes_batches_carry_content_ids_of_identical_scenes(make_train_cfg):
    cfg = make_train_cfg("objective=itm")
    datamodule = instantiate_datamodule(cfg)
    datamodule.prepare_data()
    dataset = datamodule.dataset("train", processed=False)
    contents = [dataset[i]["content"] for i in range(len(dataset))]
    # What the fused pair shows: image and text attributes (audio is not loaded).
    scenes = [(row["attributes"]["image"], row["attributes"]["text"]) for row in dataset.rows]
    for i in range(len(scenes)):
        for j in range(i):
            assert (contents[i] == contents[j]) == (scenes[i] == scenes[j])
    assert len({json.dumps(s, sort_keys=True) for s in scenes}) < len(scenes)  # saw equal ones


def test_contrastive_loss_drops_same_content_pairs_from_the_softmax(make_train_cfg):
    cfg = make_train_cfg("objective=contrastive")
    module = build_module(cfg, 3).eval()
    datamodule = instantiate_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.set_processors(*encoder_processors(module))
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert len(set(batch["content"].tolist())) < len(batch["content"])  # some scene repeats
    with torch.no_grad():
        losses, (a, b) = module._losses(batch)
        logits = module.loss_fn.logit_scale * a @ b.T
    # Brute force: row i's softmax leaves out the other rows of the same content.
    same = batch["content"][:, None] == batch["content"][None, :]
    same.fill_diagonal_(False)
    expected = (
        F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(a)))
        + F.cross_entropy(logits.T.masked_fill(same, float("-inf")), torch.arange(len(a)))
    ) / 2
    torch.testing.assert_close(losses["contrastive_loss"], expected)


@pytest.mark.parametrize("fusion", ["late", "sum", "attention", "unimodal_image"])
def test_itm_refuses_a_fusion_that_cannot_judge_pairs_before_any_work(make_train_cfg, fusion):
    cfg = make_train_cfg("objective=itm", f"fusion={fusion}")
    with pytest.raises(
        ConfigError,
        match=r"fusion: \w+ cannot judge image-text pairs.*"
        r"choose one of fusion=\[.*'cross_attention'.*'early_tokens'.*\]",
    ):
        train(cfg)
    # The loss itself refuses them too, for code that builds it directly.
    node = OmegaConf.load(CONF / "fusion" / f"{fusion}.yaml")
    node.pop("match_params")  # a builder option, not an argument
    built = instantiate(
        node,
        modalities=["image", "text"],
        dim=8,
        **({"num_classes": 2} if fusion == "late" else {}),
    )
    with pytest.raises(ValueError, match="matching needs a fusion whose output can tell"):
        MatchingLoss(built)


def test_itm_defaults_to_cross_attention_with_the_shared_head(make_train_cfg):
    cfg = make_train_cfg("objective=itm")
    assert cfg.fusion._target_ == "mmexp.fusion.CrossAttentionFusion"
    assert make_train_cfg("objective=itm", "fusion=product").fusion._target_.endswith(
        "ProductFusion"
    )  # an explicit choice still wins
    module = build_module(cfg, 3)
    head = module.matching.head
    assert isinstance(head, MLPHead)
    assert (head.in_dim, head.out_dim) == (module.matching.fusion.out_dim, 2)


def test_contrastive_needs_exactly_two_modalities(make_train_cfg):
    with pytest.raises(ValueError, match="exactly two modalities"):
        train(make_train_cfg("objective=contrastive", "data.modalities=[image,text,audio]"))


def test_hard_negatives_follow_the_similarities():
    logits = torch.tensor(
        [[9.0, 8.0, 0.0, 0.0], [0.0, 9.0, 8.0, 0.0], [0.0, 0.0, 9.0, 8.0], [8.0, 0.0, 0.0, 9.0]]
    )
    torch.manual_seed(0)
    draws = torch.stack([sample_hard_negatives(logits) for _ in range(200)])
    assert not (draws == torch.arange(4)).any()  # never the positive
    hardest = torch.tensor([1, 2, 3, 0])
    assert (draws == hardest).float().mean() > 0.95  # exp(8) dominates exp(0)


def test_hard_negatives_need_two_pairs():
    with pytest.raises(ValueError, match=">= 2 pairs"):
        sample_hard_negatives(torch.zeros(1, 1))


def test_eval_of_a_pretraining_checkpoint_reports_the_same_retrieval(
    make_train_cfg, tmp_path, data_dir
):
    result = train(make_train_cfg("objective=contrastive", run_name="pretrain"))
    cfg = compose_config(
        "eval",
        [f"ckpt_path={result['best_checkpoint']}", "logger=csv", "trainer.accelerator=cpu"],
        tmp_path / "eval",
        data_dir,
    )
    evaluated = evaluate(cfg)["metrics"]
    for name in RECALLS:
        assert evaluated[f"test/{name}"] == pytest.approx(result["metrics"][f"test/{name}"])


def _fixed_features(batch):
    """Encoder outputs read straight from the batch (tokens ``[B, T, D]`` per modality)."""
    return {
        name: EncoderOutput(
            batch[name],
            torch.ones(batch[name].shape[:2], dtype=torch.bool),
            batch[name].mean(dim=1),
        )
        for name in ("image", "text")
    }


def test_grouped_batches_pair_each_caption_with_its_image(make_train_cfg):
    module = build_module(make_train_cfg("objective=contrastive"), num_classes=1)
    module.encode = _fixed_features
    generator = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(3, 4, 128, generator=generator),
        "text": torch.randn(7, 5, 128, generator=generator),
        "index": torch.tensor([10, 11, 12]),  # data-set ids, not positions
        "group": torch.tensor([10, 10, 11, 12, 12, 12, 10]),
        "member": torch.arange(7),
    }
    losses, embeddings = module._losses(batch)
    images = F.normalize(batch["image"].mean(dim=1), dim=-1)
    captions = F.normalize(batch["text"].mean(dim=1), dim=-1)
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 0])
    expected = module.loss_fn(images[rows], captions, ids=batch["group"])
    torch.testing.assert_close(losses["loss"], expected)
    assert [len(e) for e in embeddings] == [3, 7]  # each image once in the retrieval gallery
    module.validation_step(batch, 0)
    assert module.val_retrieval.compute()["gallery_size_text"] == 7


def test_repeated_items_in_a_paired_batch_are_not_negatives(make_train_cfg):
    module = build_module(make_train_cfg("objective=contrastive"), num_classes=1)
    module.encode = _fixed_features
    generator = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(4, 3, 128, generator=generator),
        "text": torch.randn(4, 3, 128, generator=generator),
        "index": torch.tensor([5, 8, 5, 2]),
    }  # image 5 with two of its captions
    pairs = [F.normalize(batch[m].mean(dim=1), dim=-1) for m in ("image", "text")]
    losses, _ = module._losses(batch)
    torch.testing.assert_close(losses["loss"], module.loss_fn(*pairs, ids=batch["index"]))
    assert not torch.isclose(losses["loss"], module.loss_fn(*pairs))
