"""COCO Captions and Flickr30k (Karpathy splits) from a few samples: training, sampling, recall."""

import json
import logging
from math import comb

import pytest
import torch

from mmexp.builders import build_data_and_model
from mmexp.data.sets.captions import OneCaptionPerImage
from mmexp.data.sets.karpathy_captions import KarpathyCaptionsDataModule
from mmexp.eval import evaluate
from mmexp.train import train
from tests.helpers.caption_fixtures import write_karpathy
from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.retrieval import brute_force_grouped

FAST = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
LOADER = [
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.batch_size=4",
    "data.eval_batch_size=3",
    "data.pin_memory=false",
]
RECALLS = [f"r@{k}_{d}" for k in (1, 5, 10) for d in ("i2t", "t2i")]


def config(tmp_path, data_dir, name, root, *overrides):
    return compose_config(
        "train",
        [*FAST, f"data={name}", f"data.root={root}", *LOADER, "objective=contrastive", *overrides],
        tmp_path / "run",
        data_dir,
    )


# Enough images for recall to mean something, few enough to train in seconds.
LEARNABLE = {"train": 24, "restval": 8, "val": 12, "test": 16}


def chance_recall(images, captions_per_image, k):
    """Expected recall@k of a random ranking: ``(i2t, t2i)`` over ``images`` images."""
    captions = images * captions_per_image
    i2t = 1 - comb(captions - captions_per_image, k) / comb(captions, k)
    return i2t, min(k / images, 1.0)


def test_coco_contrastive_training_learns_the_colours_named_in_the_captions(
    tmp_path, data_dir, caplog
):
    """Each image is one of six colours and its captions name it: retrieval beats a random
    ranking by far once the towers have learnt the colours.

    A random ranking of the 16 test images and 80 captions scores rsum 185 (recall@5 0.28
    image-to-text, 0.31 text-to-image). Seeds 0, 1, 2, 42 score rsum 435, 448, 400, 450
    and text-to-image recall@5 0.95, 0.99, 0.98, 1.0. Images of one colour look alike, so
    recall@1 stays near 1/3 at best: the bars are on rsum and recall@5. 20 epochs of batches
    of 8 (4 epochs of 4 stay at chance), without early stopping on the 12 validation images.
    """
    root = write_karpathy(tmp_path / "coco", splits=LEARNABLE)
    learn = ["data.batch_size=8", "trainer.max_epochs=20", "++callbacks.early_stopping=null"]
    with caplog.at_level(logging.WARNING):
        result = train(config(tmp_path, data_dir, "coco_captions", root, *learn))
    metrics = result["metrics"]
    for name in RECALLS:
        assert 0 <= metrics[f"val/{name}"] <= 1 and 0 <= metrics[f"test/{name}"] <= 1
    # 16 test images encoded once; 80 captions (the six-caption images cut to five)
    assert metrics["test/gallery_size"] == 16 and metrics["test/gallery_size_text"] == 80
    assert metrics["val/rsum_best"] >= metrics["val/rsum"]
    assert "train: 32 found, 113287 published" in caplog.text  # train + restval
    chance = {k: chance_recall(16, 5, k) for k in (1, 5, 10)}
    chance_rsum = 100 * sum(sum(pair) for pair in chance.values())
    assert metrics["test/rsum"] > chance_rsum + 120, (metrics, chance_rsum)
    assert metrics["test/r@5_t2i"] > chance[5][1] + 0.3, metrics
    assert metrics["test/r@5_i2t"] > chance[5][0] + 0.3, metrics


def test_flickr30k_trains_on_every_caption_with_matching(tmp_path, data_dir):
    root = write_karpathy(tmp_path / "f30k", "flickr30k")
    result = train(
        config(
            tmp_path,
            data_dir,
            "flickr30k",
            root,
            "objective=itm",
            "fusion=concat",
            "data.train_captions=all",
            "data.train_subset=3",
            "trainer.max_epochs=1",
        )
    )
    metrics = result["metrics"]
    assert metrics["test/gallery_size"] == 4 and metrics["test/gallery_size_text"] == 20
    assert 0 <= metrics["val/itm_acc"] <= 1 and 0 <= metrics["test/r@1_t2i"] <= 1


def test_model_recall_equals_a_brute_force_ranking_of_its_embeddings(tmp_path, data_dir):
    root = write_karpathy(tmp_path / "coco")
    datamodule, module = build_data_and_model(config(tmp_path, data_dir, "coco_captions", root))
    datamodule.setup("test")
    module.eval()
    images, captions, owner = [], [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            module.test_step(batch, 0)
            features = module.encode(batch)
            images.append(module.embed(features["image"]))
            captions.append(module.embed(features["text"]))
            owner.append(batch["group"])
    values = module.test_retrieval.compute()
    images, captions, owner = torch.cat(images), torch.cat(captions), torch.cat(owner)
    assert (len(images), len(captions)) == (4, 20)
    for k in (1, 5, 10):
        i2t, t2i = brute_force_grouped(images, captions, owner, k)
        assert values[f"r@{k}_i2t"].item() == pytest.approx(i2t)
        assert values[f"r@{k}_t2i"].item() == pytest.approx(t2i)


def test_training_draws_one_caption_per_image_reproducibly(tmp_path):
    dm = KarpathyCaptionsDataModule(write_karpathy(tmp_path / "coco"), caption_seed=7)
    pairs = dm.dataset("train", processed=False)
    assert len(pairs) == 41  # 8 images (train + restval), one with six captions
    sampler = OneCaptionPerImage(pairs.offsets, seed=7)
    owner = [pairs[i]["index"] for i in range(len(pairs))]
    epochs = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert sorted(owner[i] for i in drawn) == list(range(8))  # every image once
        epochs.append(drawn)
    assert len({tuple(d) for d in epochs}) == 4  # a new draw each epoch...
    again = OneCaptionPerImage(pairs.offsets, seed=7)
    again.set_epoch(2)
    assert list(again) == epochs[2]  # ...the same draw for the same seed and epoch
    other = OneCaptionPerImage(pairs.offsets, seed=8)
    assert list(other) != epochs[0]
    # Every caption gets drawn over enough epochs.
    seen = set()
    for epoch in range(60):
        sampler.set_epoch(epoch)
        seen.update(sampler)
    assert seen == set(range(41))


def test_ranks_share_one_draw_and_split_it(tmp_path):
    dm = KarpathyCaptionsDataModule(write_karpathy(tmp_path / "coco"))
    offsets = dm.dataset("train", processed=False).offsets
    shards = [OneCaptionPerImage(offsets, seed=0, num_replicas=3, rank=r) for r in range(3)]
    for shard in shards:
        shard.set_epoch(5)
    drawn = shards[0].draw().tolist()
    assert [len(list(s)) for s in shards] == [3, 3, 3]  # 8 images padded to 9
    assert sorted(i for s in shards for i in s) == sorted(drawn + drawn[:1])


def test_loader_uses_the_sampler_and_groups_eval_captions(tmp_path, data_dir):
    root = write_karpathy(tmp_path / "coco")
    datamodule, _ = build_data_and_model(config(tmp_path, data_dir, "coco_captions", root))
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert isinstance(loader.sampler, OneCaptionPerImage) and loader.sampler.seed == 42
    indices = torch.cat([batch["index"] for batch in loader])
    assert sorted(indices.tolist()) == list(range(8))  # no image twice in an epoch
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["index"].tolist() == [0, 1, 2] and batch["image"].shape[0] == 3
    assert batch["group"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert batch["member"].tolist() == list(range(15))
    assert batch["text"]["input_ids"].shape[0] == 15


@pytest.mark.slow
def test_two_process_training_reports_the_recall_of_one_process(tmp_path, data_dir):
    # 5 test and 3 val images over 2 ranks: the distributed sampler repeats one of each.
    root = write_karpathy(tmp_path / "coco", splits={"train": 6, "restval": 2, "val": 3, "test": 5})
    run_cli(
        "train",
        "trainer=ddp_cpu",
        "data=coco_captions",
        f"data.root={root}",
        "objective=contrastive",
        *FAST,
        *LOADER,
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'ddp'}",
        cwd=tmp_path,
        timeout=900,
    )
    distributed = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert distributed["metrics"]["test/gallery_size_text"] == 25
    # One caption per image per epoch kept under DDP: 8 images, 4 per rank, one batch of 4
    # per epoch (a sampler over the 41 pairs would take 6).
    best = torch.load(distributed["best_checkpoint"], weights_only=True)
    assert best["global_step"] == best["epoch"] + 1
    cfg = compose_config(
        "eval",
        [f"ckpt_path={distributed['best_checkpoint']}", "logger=csv", "trainer.accelerator=cpu"],
        tmp_path / "eval",
        data_dir,
    )
    single = evaluate(cfg)["metrics"]
    for name in [*RECALLS, "gallery_size", "gallery_size_text"]:
        assert single[f"test/{name}"] == pytest.approx(distributed["metrics"][f"test/{name}"])
