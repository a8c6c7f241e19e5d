"""UPMC Food-101 from a few samples in its release format, through mmexp-train."""

import csv
import logging
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mmexp.data.sets.food101 import CLASSES, Food101DataModule, stratified_holdout
from mmexp.train import train
from tests.helpers.caption_fixtures import write_food101
from tests.helpers.configs import FAST_OVERRIDES, compose_config

FAST = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
LOADER = [
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.batch_size=4",
    "data.pin_memory=false",
]


# Enough rows for the test figures to mean something, few enough to train in seconds.
LEARNABLE = {"train": 48, "test": 24}


def test_training_on_the_release_format_learns_the_dish_colours(tmp_path, data_dir, caplog):
    """Each dish has its colour in the fixture: test accuracy is well above the 1/3 of a
    guess among the three dishes present (a 101-way head could do worse still).

    Seeds 0, 1, 2 and 42 score test accuracy 1.0, 1.0, 1.0, 1.0.
    """
    root = write_food101(tmp_path / "food", LEARNABLE)
    # No test report: its 101 x 101 annotated confusion-matrix plot alone takes over a minute.
    cfg = compose_config(
        "train",
        [
            *FAST,
            "data=food101",
            f"data.root={root}",
            *LOADER,
            "data.val_size=12",
            "trainer.max_epochs=4",
            "++callbacks.test_report=null",
        ],
        tmp_path / "run",
        data_dir,
    )
    with caplog.at_level(logging.WARNING):
        result = train(cfg)
    metrics = result["metrics"]
    assert metrics["test/acc"] > 1 / 3 + 0.3, metrics
    assert "val/acc_best" in metrics
    assert "train_titles: 48 found, 67988 published" in caplog.text
    assert result["data_skipped"]["counts"] == {}


def titles_of(root, split):
    """The CSV rows of a split by file name, read with nothing but ``csv``."""
    with (root / "texts" / f"{split}_titles.csv").open(newline="", encoding="utf-8") as handle:
        return {name: (text, label) for name, text, label in csv.reader(handle)}


def test_each_sample_carries_the_dish_photo_and_title_of_its_row(tmp_path):
    root = write_food101(tmp_path / "food")
    dm = Food101DataModule(root, val_size=3)
    samples = {}
    for stage in ("train", "val", "test"):
        split = "test" if stage == "test" else "train"
        written = titles_of(root, split)
        dataset = dm.dataset(stage, processed=False)
        for position, row in enumerate(dataset.rows):
            sample, (text, label) = dataset[position], written[row["id"]]
            assert sample["label"] == CLASSES.index(label) and sample["text"] == text
            with Image.open(root / "images" / split / label / row["id"]) as image:
                pixels = np.asarray(image.convert("RGB"))
            np.testing.assert_array_equal(np.asarray(sample["image"]), pixels)
            samples[split, row["id"]] = sample
    # Train and validation share out the training CSV; every row of both CSVs is a sample.
    assert sorted(samples) == sorted(
        (split, name) for split in ("train", "test") for name in titles_of(root, split)
    )
    # Rows differ in photo and title (across the splits too), so that a mix-up shows.
    assert len({s["image"].tobytes() for s in samples.values()}) == len(samples)
    assert len({s["text"] for s in samples.values()}) == len(samples)


def test_rows_become_samples_of_the_101_dishes(tmp_path):
    dm = Food101DataModule(write_food101(tmp_path / "food"), val_size=3)
    assert dm.num_classes == 101
    test = dm.dataset("test", processed=False)
    assert len(test) == 6
    assert test[1]["text"] == "Best pizza recipe no. 14, easy and quick"  # quoted commas kept
    assert test[1]["label"] == CLASSES.index("pizza")
    assert test[1]["image"].size == (40, 32)


def test_validation_is_a_seeded_holdout_in_proportion_to_each_class(tmp_path):
    root = write_food101(tmp_path / "food", {"train": 12, "test": 3})
    splits = Food101DataModule(root, val_size=6).read_splits()
    val_ids = [r["id"] for r in splits["val"]]
    assert Counter(r["label"] for r in splits["val"]) == {"apple_pie": 2, "pizza": 2, "sushi": 2}
    assert not set(val_ids) & {r["id"] for r in splits["train"]}
    assert len(splits["train"]) + len(val_ids) == 12
    assert [r["id"] for r in Food101DataModule(root, val_size=6).read_splits()["val"]] == val_ids
    other_seeds = [
        [r["id"] for r in Food101DataModule(root, val_size=6, val_seed=seed).read_splits()["val"]]
        for seed in (1, 2, 3)
    ]
    assert any(ids != val_ids for ids in other_seeds)


def test_holdout_quotas_sum_to_the_size_with_largest_remainders():
    labels = ["a"] * 7 + ["b"] * 3 + ["c"] * 2
    chosen = stratified_holdout(labels, 5, seed=0)
    # shares 2.92, 1.25, 0.83: floors 2, 1, 0; the two left go to c (.83) and a (.92)
    assert Counter(labels[i] for i in chosen) == {"a": 3, "b": 1, "c": 1}
    with pytest.raises(ValueError, match="val_size must be between 1 and 11"):
        stratified_holdout(labels, 12, seed=0)


def test_count_check_can_be_strict(tmp_path):
    dm = Food101DataModule(write_food101(tmp_path / "food"), val_size=3, check_counts="raise")
    with pytest.raises(ValueError, match="train_titles: 12 found, 67988 published"):
        dm.setup("fit")


def test_missing_files_say_where_the_data_come_from(tmp_path):
    root = write_food101(tmp_path / "food")
    (root / "texts" / "test_titles.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*test_titles.csv.*upmcfood101"):
        Food101DataModule(root, val_size=3).setup("test")
    root = write_food101(tmp_path / "food2")
    (root / "images" / "test").rename(root / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"missing folder .*images/test.*visiir"):
        Food101DataModule(root, val_size=3).setup("test")


def test_bad_rows_are_named_and_can_be_skipped(tmp_path):
    root = write_food101(tmp_path / "food")
    csv_path = root / "texts" / "test_titles.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = "sushi_2.jpg,sushi number 2,sashimi_platter"  # no such dish
    lines[4] = "pizza_4.jpg,,pizza"  # no title
    lines.append("lone_field")  # not a row
    lines.append("pizza_99.jpg,a pizza with no photo,pizza")
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"test_titles.csv: test line 7: 1 field"):
        Food101DataModule(root, val_size=3).setup("test")
    dm = Food101DataModule(root, val_size=3, on_bad_sample="skip")
    assert len(dm.dataset("test", processed=False)) == 4  # 7 rows, 3 of them bad
    reasons = sorted(str(b) for b in dm.bad_samples)
    assert len(reasons) == 4
    assert any("test row 2 (id='sushi_2.jpg'): missing image file" in r for r in reasons)
    assert any("(id='pizza_4.jpg'): empty text" in r for r in reasons)
    assert any("(id='pizza_99.jpg'): missing image file" in r for r in reasons)
    # Without file checks the unknown dish itself is named.
    csv_path.write_text(csv_path.read_text().replace("lone_field\n", ""))
    with pytest.raises(
        ValueError,
        match=r"test row 2 \(id='sushi_2.jpg'\): unknown label "
        "'sashimi_platter'",
    ):
        Food101DataModule(root, val_size=3, check_files=False).setup("test")
