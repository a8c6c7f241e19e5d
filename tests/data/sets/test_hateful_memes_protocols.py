"""Hateful Memes protocols and release variants: unlabelled test files, Phase 1, unseen."""

import json
import logging

import pytest

from mmexp.data.sets.hateful_memes import HatefulMemesDataModule
from tests.data.sets.test_hateful_memes import run
from tests.helpers.published_fixtures import write_hateful_memes, write_hateful_memes_phase1


def ids_in(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_fitting_does_not_need_the_unlabelled_test_file(tmp_path, data_dir, policy, caplog):
    root = write_hateful_memes(tmp_path / "hm", unlabelled=("test_seen",))
    with caplog.at_level(logging.WARNING):
        result = run(tmp_path, data_dir, root, "test=false", f"data.on_bad_sample={policy}")
    assert "val/auroc_best" in result["metrics"]
    assert not any(key.startswith("test/") for key in result["metrics"])
    # Named before fitting, so a run that would test learns it before training.
    assert (
        "test split will not load" in caplog.text and "test_seen.jsonl has no labels" in caplog.text
    )


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_testing_on_an_unlabelled_file_names_it_and_a_labelled_split(tmp_path, policy):
    root = write_hateful_memes(tmp_path / "hm", unlabelled=("test_seen",))
    dm = HatefulMemesDataModule(root, on_bad_sample=policy)
    assert len(dm.dataset("train", processed=False)) == 8
    with pytest.raises(ValueError, match=r"test_seen\.jsonl has no labels.*data\.test_split="):
        dm.dataset("test", processed=False)


def test_a_phase1_copy_is_detected_logged_and_trained_on(tmp_path, data_dir, caplog):
    root = write_hateful_memes_phase1(tmp_path / "hm")
    with caplog.at_level(logging.INFO, logger="mmexp.data.sets.hateful_memes"):
        dm = HatefulMemesDataModule(root)
        assert dm.source_of("val").name == "dev.jsonl"
    assert dm.protocol == "phase1" and "data.protocol=phase1" in caplog.text
    result = run(tmp_path, data_dir, root, "test=false")
    assert "val/auroc_best" in result["metrics"]
    # Its test file is the challenge's, without labels: the error points at the dev file.
    with pytest.raises(ValueError, match=r"test\.jsonl has no labels.*data\.test_split=dev"):
        run(tmp_path, data_dir, root)


def test_the_phase1_release_sizes_are_the_published_ones(tmp_path, caplog):
    # JSONL files of the release's sizes; the rows are read, the images never opened.
    sizes = {"train": 8500, "dev": 500, "test": 1000}
    root = write_hateful_memes(tmp_path / "hm", sizes, unlabelled=("test",), images=False)
    dm = HatefulMemesDataModule(root, protocol="phase1", check_counts="raise")
    splits = dm.read_splits()
    assert {stage: len(rows) for stage, rows in splits.items()} == {
        "train": 8500,
        "val": 500,
        "test": 1000,
    }


def test_the_unseen_protocol_reads_the_unseen_files(tmp_path, data_dir):
    """The unseen files are validated and tested on; the run scores well above chance on
    them, as on the seen ones (seeds 0, 1, 2, 42: AUROC 1.0, accuracy 1.0)."""
    splits = {"train": 48, "dev_seen": 4, "test_seen": 4, "dev_unseen": 16, "test_unseen": 24}
    root = write_hateful_memes(tmp_path / "hm", splits)
    dm = HatefulMemesDataModule(root, protocol="unseen")
    for stage, name in (("val", "dev_unseen"), ("test", "test_unseen")):
        rows = dm.dataset(stage, processed=False).rows
        assert [row["id"] for row in rows] == ids_in(root / f"{name}.jsonl")
    result = run(tmp_path, data_dir, root, "data.protocol=unseen", "trainer.max_epochs=4")
    metrics = result["metrics"]
    assert metrics["test/auroc"] > 0.8 and metrics["test/acc"] > 0.75, metrics


def test_a_split_file_overrides_the_protocols_and_unknown_protocols_are_refused(tmp_path):
    root = write_hateful_memes(tmp_path / "hm", {"train": 8, "dev_seen": 4, "test_unseen": 4})
    dm = HatefulMemesDataModule(root, test_split="test_unseen")
    assert [dm.source_of(s).name for s in ("train", "val", "test")] == [
        "train.jsonl",
        "dev_seen.jsonl",
        "test_unseen.jsonl",
    ]
    with pytest.raises(ValueError, match=r"data\.protocol must be one of .*'seen'"):
        HatefulMemesDataModule(root, protocol="phase3")
