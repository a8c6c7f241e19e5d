"""Hateful Memes from a few samples in its release format, through mmexp-train."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from mmexp.builders import build_data_and_model
from mmexp.data.sets.hateful_memes import HatefulMemesDataModule
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.published_fixtures import write_hateful_memes

FAST = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
LOADER = [
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.batch_size=4",
    "data.pin_memory=false",
]


def config(tmp_path, data_dir, root, *overrides):
    return compose_config(
        "train",
        [
            *FAST,
            "data=hateful_memes",
            f"data.root={root}",
            *LOADER,
            "monitor=val/auroc",
            *overrides,
        ],
        tmp_path / "run",
        data_dir,
    )


def run(tmp_path, data_dir, root, *overrides):
    return train(config(tmp_path, data_dir, root, *overrides))


# Enough memes for the test figures to mean something, few enough to train in seconds.
LEARNABLE = {"train": 48, "dev_seen": 16, "test_seen": 24}


def test_training_on_the_release_format_learns_the_planted_colour(tmp_path, data_dir, caplog):
    """Hateful memes are red in the fixture: a run that reads labels and images of the same
    rows scores well above chance (AUROC 0.5, accuracy 0.5 on the balanced test file).

    Seeds 0, 1, 2 and 42 (the default) score AUROC 1.0 and accuracy 1.0 here; a label read
    from another row (shifted by one, here the other class) drops both to chance or below.
    """
    root = write_hateful_memes(tmp_path / "hm", LEARNABLE)
    with caplog.at_level(logging.WARNING):
        result = run(tmp_path, data_dir, root, "trainer.max_epochs=4")
    metrics = result["metrics"]
    assert metrics["test/auroc"] > 0.8 and metrics["test/acc"] > 0.75, metrics
    assert "val/auroc_best" in metrics
    assert "train: 48 found, 8500 published" in caplog.text


def rows_of(path):
    """The rows of a JSONL split file, by meme id, read with nothing but ``json``."""
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("stage", ["train", "val", "test"])
def test_each_sample_carries_the_label_image_and_text_of_its_row(tmp_path, stage):
    root = write_hateful_memes(tmp_path / "hm")
    name = {"train": "train", "val": "dev_seen", "test": "test_seen"}[stage]
    written = rows_of(root / f"{name}.jsonl")
    dataset = HatefulMemesDataModule(root).dataset(stage, processed=False)
    assert [row["id"] for row in dataset.rows] == list(written)  # every row, in file order
    for position, meme_id in enumerate(written):
        sample, row = dataset[position], written[meme_id]
        assert sample["label"] == row["label"] and sample["text"] == row["text"]
        with Image.open(root / row["img"]) as image:
            pixels = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(np.asarray(sample["image"]), pixels)
    # The rows differ in every modality, so that a sample mixing two rows would show.
    samples = [dataset[i] for i in range(len(dataset))]
    assert len({s["text"] for s in samples}) == len({s["image"].tobytes() for s in samples})
    assert len({s["image"].tobytes() for s in samples}) == len(samples)
    assert {s["label"] for s in samples} == {0, 1}


def test_loader_batches_keep_each_processed_meme_with_its_label(tmp_path, data_dir):
    # Past the encoders' processors and the collator: labels in file order, and the red
    # (hateful) images still redder than blue, channel by channel, in the image tensors.
    root = write_hateful_memes(tmp_path / "hm")
    datamodule, _ = build_data_and_model(config(tmp_path, data_dir, root))
    datamodule.setup("validate")
    labels, redder = [], []
    for batch in datamodule.val_dataloader():
        labels += batch["label"].tolist()
        channels = batch["image"].mean(dim=(2, 3))
        redder += (channels[:, 0] > channels[:, 2]).tolist()
    written = [row["label"] for row in rows_of(root / "dev_seen.jsonl").values()]
    assert labels == written and redder == [bool(label) for label in written]


def test_count_check_can_be_strict(tmp_path, data_dir):
    root = write_hateful_memes(tmp_path / "hm")
    with pytest.raises(ValueError, match="dev_seen: 4 found, 500 published"):
        run(tmp_path, data_dir, root, "data.check_counts=raise")


def test_missing_split_file_says_where_the_data_comes_from(tmp_path, data_dir):
    root = write_hateful_memes(tmp_path / "hm")
    (root / "test_seen.jsonl").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"missing .*test_seen.jsonl.*hatefulmemeschallenge"
    ):
        run(tmp_path, data_dir, root)


def test_unseen_test_split_and_bad_rows_are_named(tmp_path, data_dir):
    root = write_hateful_memes(
        tmp_path / "hm", {"train": 8, "dev_seen": 4, "test_seen": 4, "test_unseen": 4}
    )
    lines = (root / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    row["label"] = 5
    lines[3] = json.dumps(row)
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl: train row 3 \(id=10004\): unknown label 5"):
        run(tmp_path, data_dir, root, "data.test_split=test_unseen")
    result = run(tmp_path, data_dir, root, "data.test_split=test_unseen", "data.on_bad_sample=skip")
    assert result["data_skipped"]["counts"] == {"train": 1}
