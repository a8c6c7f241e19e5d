"""COCO Captions and Flickr30k (Karpathy splits): what is read from the release files."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from mmexp.builders import build_data_and_model
from mmexp.data.sets.karpathy_captions import KarpathyCaptionsDataModule
from tests.data.sets.test_karpathy_captions import config
from tests.helpers.caption_fixtures import write_karpathy, write_lavis


def written_images(root, dataset="coco"):
    """Karpathy's entries by file name, read with nothing but ``json``."""
    entries = json.loads((root / f"dataset_{dataset}.json").read_text())["images"]
    return {entry["filename"]: entry for entry in entries}


def pixels_of(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("eval_captions", [5, "all"])
def test_each_image_comes_with_the_captions_of_its_entry(tmp_path, eval_captions):
    root = write_karpathy(tmp_path / "coco")
    written = written_images(root)
    dm = KarpathyCaptionsDataModule(root, eval_captions=eval_captions)
    seen = {}
    for stage in ("val", "test"):
        images = dm.dataset(stage, processed=False)
        in_split = [name for name, entry in written.items() if entry["split"] == stage]
        assert [row["id"] for row in images.rows] == in_split
        for position, row in enumerate(images.rows):
            sample, entry = images[position], written[row["id"]]
            captions = [sentence["raw"] for sentence in entry["sentences"]]
            assert sample["text"] == (captions[:5] if eval_captions == 5 else captions)
            expected = pixels_of(root / entry["filepath"] / entry["filename"])
            np.testing.assert_array_equal(np.asarray(sample["image"]), expected)
            seen[row["id"]] = expected.tobytes()
    # Training pairs: each pair is its image and one of that image's captions; all are there.
    pairs = dm.dataset("train", processed=False)
    drawn = {}
    for pair in range(len(pairs)):
        sample = pairs[pair]
        entry = written[pairs.rows[sample["index"]]["id"]]
        assert entry["split"] in ("train", "restval")
        expected = pixels_of(root / entry["filepath"] / entry["filename"])
        np.testing.assert_array_equal(np.asarray(sample["image"]), expected)
        drawn.setdefault(entry["filename"], []).append(sample["text"])
        seen[entry["filename"]] = expected.tobytes()
    assert drawn == {
        name: [sentence["raw"] for sentence in entry["sentences"]]
        for name, entry in written.items()
        if entry["split"] in ("train", "restval")
    }
    # Images and caption lists differ per image, so that a mix-up shows.
    assert len(set(seen.values())) == len(seen) == len(written)
    assert len({tuple(s["raw"] for s in e["sentences"]) for e in written.values()}) == len(seen)


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
