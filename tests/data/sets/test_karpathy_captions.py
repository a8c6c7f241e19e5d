"""COCO Captions and Flickr30k (Karpathy splits) from a few samples in their release format."""

import json
import logging

import pytest
import torch

from mmexp.builders import build_data_and_model
from mmexp.data.sets.captions import OneCaptionPerImage
from mmexp.data.sets.karpathy_captions import KarpathyCaptionsDataModule
from mmexp.eval import evaluate
from mmexp.train import train
from tests.helpers.caption_fixtures import write_karpathy, write_lavis
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


def test_coco_contrastive_training_reports_group_aware_recall(tmp_path, data_dir, caplog):
    root = write_karpathy(tmp_path / "coco")
    with caplog.at_level(logging.WARNING):
        result = train(config(tmp_path, data_dir, "coco_captions", root))
    metrics = result["metrics"]
    for name in RECALLS:
        assert 0 <= metrics[f"val/{name}"] <= 1 and 0 <= metrics[f"test/{name}"] <= 1
    # 4 test images encoded once; 20 captions (the six-caption image cut to five)
    assert metrics["test/gallery_size"] == 4 and metrics["test/gallery_size_text"] == 20
    assert metrics["val/rsum_best"] >= metrics["val/rsum"]
    assert "train: 8 found, 113287 published" in caplog.text  # train + restval


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


def test_count_check_and_missing_files(tmp_path):
    root = write_karpathy(tmp_path / "coco")
    with pytest.raises(ValueError, match="val: 3 found, 5000 published"):
        KarpathyCaptionsDataModule(root, check_counts="raise").dataset("val", processed=False)
    (root / "val2014").rename(root / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"missing folder .*val2014.*cocodataset"):
        KarpathyCaptionsDataModule(root).dataset("val", processed=False)
    (root / "dataset_coco.json").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"missing .*dataset_coco.json.*caption_datasets.zip"
    ):
        KarpathyCaptionsDataModule(root).dataset("val", processed=False)
    flickr = write_karpathy(tmp_path / "f30k", "flickr30k")
    with pytest.raises(ValueError, match="holds the 'flickr30k' captions, not 'coco'"):
        KarpathyCaptionsDataModule(flickr, annotations="dataset_flickr30k.json").read_splits()


def test_bad_captions_and_images_are_named_and_can_be_skipped(tmp_path):
    root = write_karpathy(tmp_path / "coco")
    annotations = json.loads((root / "dataset_coco.json").read_text())
    test = [entry for entry in annotations["images"] if entry["split"] == "test"]
    test[1]["sentences"][2]["raw"] = "  "
    (root / test[3]["filepath"] / test[3]["filename"]).unlink()
    (root / "dataset_coco.json").write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match=r"missing image file .*" + test[3]["filename"]):
        KarpathyCaptionsDataModule(root).dataset("test", processed=False)
    (root / test[3]["filepath"] / test[3]["filename"]).write_bytes(b"")  # back, but corrupt
    with pytest.raises(
        ValueError,
        match=r"dataset_coco.json: test row 7 \(id='" + test[1]["filename"] + r"#2'\): empty text",
    ):
        KarpathyCaptionsDataModule(root).dataset("test", processed=False)
    dm = KarpathyCaptionsDataModule(root, on_bad_sample="skip")
    images = dm.dataset("test", processed=False)
    assert [len(row["captions"]) for row in images.rows] == [5, 4, 5, 5]
    assert len(dm.bad_samples) == 1
    assert images[3] is None  # undecodable: left out when read, counted by the collator
    test[1]["sentences"][2]["raw"] = "a caption again"
    (root / "dataset_coco.json").write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match=r"json: row 3 \(id=.*\), image: corrupt image file"):
        KarpathyCaptionsDataModule(root).dataset("test", processed=False)[3]


def test_only_image_text_pairs_are_accepted(tmp_path):
    with pytest.raises(ValueError, match=r"data.modalities must be \[image, text\]"):
        KarpathyCaptionsDataModule(tmp_path, modalities=["text", "image"])
    with pytest.raises(ValueError, match="train_captions must be one of"):
        KarpathyCaptionsDataModule(tmp_path, train_captions="first")


def rows(dm, stage):
    return [(r["id"], r["image"], r["captions"]) for r in dm.dataset(stage, processed=False).rows]


def test_the_two_galleries_are_named_protocols(tmp_path, data_dir):
    root = write_karpathy(tmp_path / "coco")
    five = KarpathyCaptionsDataModule(root).dataset("test", processed=False)
    assert [len(r["captions"]) for r in five.rows] == [5, 5, 5, 5]  # VSE++: 25,000 on 5k
    datamodule, _ = build_data_and_model(
        config(tmp_path, data_dir, "coco_captions", root, "data.eval_captions=all")
    )
    everything = datamodule.dataset("test", processed=False)
    assert [len(r["captions"]) for r in everything.rows] == [5, 5, 5, 6]  # BLIP: 25,010
    with pytest.raises(ValueError, match="eval_captions must be a count .* or all"):
        KarpathyCaptionsDataModule(root, eval_captions="first5")


@pytest.mark.parametrize("dataset", ["coco", "flickr30k"])
@pytest.mark.parametrize("eval_captions", [5, "all"])
def test_blip_lavis_files_give_the_karpathy_rows(tmp_path, dataset, eval_captions):
    karpathy = KarpathyCaptionsDataModule(
        write_karpathy(tmp_path / "k", dataset), dataset, eval_captions=eval_captions
    )
    root = write_lavis(tmp_path / "l", dataset)
    lavis = KarpathyCaptionsDataModule(
        root, dataset, annotations="lavis", eval_captions=eval_captions, check_counts="off"
    )
    for stage in ("train", "val", "test"):
        assert rows(lavis, stage) == rows(karpathy, stage)
    # LAVIS's own cache keeps the files in annotations/.
    (root / "annotations").mkdir()
    for file in root.glob("*.json"):
        file.rename(root / "annotations" / file.name)
    moved = KarpathyCaptionsDataModule(root, dataset, annotations="lavis", check_counts="off")
    assert rows(moved, "val") == rows(KarpathyCaptionsDataModule(karpathy.root, dataset), "val")


def test_blip_lavis_files_are_named_when_given_the_wrong_way(tmp_path):
    root = write_lavis(tmp_path / "coco")
    with pytest.raises(ValueError, match=r"coco_karpathy_test.json is a BLIP/LAVIS .*lavis"):
        KarpathyCaptionsDataModule(root, annotations="coco_karpathy_test.json").read_splits()
    with pytest.raises(FileNotFoundError, match=r"missing .*dataset_coco.json, but .*=lavis"):
        KarpathyCaptionsDataModule(root).read_splits()
    with pytest.raises(ValueError, match=r"merges the \['train', 'restval'\] splits"):
        KarpathyCaptionsDataModule(root, annotations="lavis", train_splits=["train"])
    (root / "coco_karpathy_val.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"needs coco_karpathy_val.json .*googleapis"):
        KarpathyCaptionsDataModule(root, annotations="lavis").read_splits()


@pytest.mark.parametrize("folder", ["flickr30k_images", "flickr30k_images/flickr30k_images"])
def test_flickr30k_images_in_kaggle_folders_are_found(tmp_path, data_dir, caplog, folder):
    root = write_karpathy(tmp_path / "f30k", "flickr30k", image_dir=folder)
    with caplog.at_level(logging.INFO):
        datamodule, _ = build_data_and_model(config(tmp_path, data_dir, "flickr30k", root))
        test = datamodule.dataset("test", processed=False)
    assert test.rows[0]["image"].startswith(f"{folder}/") and test[0]["image"].size == (36, 30)
    assert f"images read from {folder}/ (not flickr30k-images/)" in caplog.text
    lavis = write_lavis(tmp_path / "lavis", "flickr30k", image_dir=folder)
    rows_ = KarpathyCaptionsDataModule(lavis, "flickr30k", annotations="lavis", check_counts="off")
    assert rows_.dataset("val", processed=False)[0]["image"].size == (36, 30)


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
