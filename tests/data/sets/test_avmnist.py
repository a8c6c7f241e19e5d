"""AV-MNIST from a few samples in MultiBench's array format, through mmexp-train."""

import logging

import numpy as np
import pytest

from mmexp.builders import build_data_and_model
from mmexp.data.contract import missing_members
from mmexp.data.sets.avmnist import AVMNISTDataModule
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.multibench_fixtures import write_avmnist

FAST = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
LOADER = [
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.batch_size=4",
    "data.pin_memory=false",
    "data.val_size=4",
]


def compose(tmp_path, data_dir, root, *overrides):
    return compose_config(
        "train",
        [*FAST, "experiment=avmnist", f"data.root={root}", *LOADER, *overrides],
        tmp_path / "run",
        data_dir,
    )


def test_training_on_the_release_format_learns_the_planted_stripes(tmp_path, data_dir, caplog):
    """The digit is where a bright stripe lies in both modalities: test accuracy is far
    above the 0.1 of a guess among ten digits.

    40 training, 20 validation and 30 test samples (3 to 4 of each digit), 10 epochs: seeds
    0, 1, 2 and 42 score test accuracy 1.0 (2 epochs stay at 0.1-0.2).
    """
    root = write_avmnist(tmp_path / "avmnist", {"train": 60, "test": 30})
    with caplog.at_level(logging.WARNING):
        result = train(
            compose(tmp_path, data_dir, root, "data.val_size=20", "trainer.max_epochs=10")
        )
    metrics = result["metrics"]
    assert metrics["test/acc"] <= 1 and metrics["test/acc"] > 0.1 + 0.5, metrics
    # Macro F1 of a perfect run reads 1.0000001 in float32: no upper bound of exactly 1.
    assert metrics["test/f1_macro"] > 0.5, metrics
    assert "val/acc_best" in metrics and result["monitor"] == "val/acc"
    assert "train: 40 found, 55000 published" in caplog.text
    assert (tmp_path / "run" / "test_report" / "confusion_matrix.png").is_file()


@pytest.mark.parametrize("layout", ["multibench", "mfas"])
def test_each_sample_is_the_digit_spectrogram_and_label_of_its_index(tmp_path, layout):
    root = write_avmnist(tmp_path / "avmnist", layout=layout)
    folder = "image" if layout == "multibench" else "images"
    dm = AVMNISTDataModule(root, val_size=4)
    assert dm.num_classes == 10
    # Validation: the last val_size rows of the training files, as MultiBench holds them out.
    for stage, part, first in (("train", "train", 0), ("val", "train", 8), ("test", "test", 0)):
        images = np.load(root / folder / f"{part}_data.npy")
        spectrograms = np.load(root / "audio" / f"{part}_data.npy")
        labels = np.load(root / f"{part}_labels.npy")
        dataset = dm.dataset(stage, processed=False)
        assert len(dataset) == {"train": 8, "val": 4, "test": 6}[stage]
        for position in range(len(dataset)):
            sample, row = dataset[position], first + position
            assert sample["label"] == labels[row]
            expected_image = images[row].reshape(28, 28) / 255.0
            np.testing.assert_allclose(sample["image"], expected_image, rtol=1e-6)
            np.testing.assert_allclose(sample["audio"], spectrograms[row] / 255.0, rtol=1e-6)
    # The test rows differ in label and in every array, so that a mix-up shows.
    assert len(set(labels)) == len(labels) == 6
    assert len({a.tobytes() for a in spectrograms}) == len({a.tobytes() for a in images}) == 6
    assert missing_members(dm) == [] and dm.label_report == {}


def test_missing_file_says_where_the_data_comes_from(tmp_path):
    root = write_avmnist(tmp_path / "avmnist")
    (root / "audio" / "test_data.npy").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"AV-MNIST: missing .*audio/test_data.npy.*"
        r"avmnist.tar.gz.*MultiBench",
    ):
        AVMNISTDataModule(root, val_size=4).setup("fit")


def test_the_mfas_copy_with_images_folder_is_read_and_logged(tmp_path, caplog):
    root = write_avmnist(tmp_path / "avmnist", layout="mfas")
    images = np.load(root / "images" / "train_data.npy")
    with caplog.at_level(logging.INFO, logger="mmexp.data.sets.avmnist"):
        dm = AVMNISTDataModule(root, val_size=4)
        sample = dm.dataset("train", processed=False)[3]
    np.testing.assert_allclose(sample["image"], images[3].reshape(28, 28) / 255.0, rtol=1e-6)
    assert dm.paths("test")["image"].parent.name == "images"
    assert f"digits read from {root / 'images'} (MFAS's layout)" in caplog.text


def test_missing_image_folder_names_both_layouts(tmp_path):
    root = write_avmnist(tmp_path / "avmnist")
    (root / "image").rename(root / "digits")
    with pytest.raises(
        FileNotFoundError,
        match=r"AV-MNIST: missing .*/image/ \(MultiBench's layout\) or "
        r".*/images/ \(MFAS's layout\).*avmnist.tar.gz",
    ):
        AVMNISTDataModule(root, val_size=4).setup("fit")


def test_wrong_shapes_are_named_with_their_file(tmp_path):
    root = write_avmnist(tmp_path / "avmnist")
    np.save(root / "audio" / "train_data.npy", np.zeros((12, 100, 100), np.float32))
    with pytest.raises(
        ValueError,
        match=r"audio/train_data.npy: expected spectrograms of shape "
        r"\[N, 112, 112\], got \[12, 100, 100\]",
    ):
        AVMNISTDataModule(root, val_size=4).setup("fit")
    write_avmnist(root)
    np.save(root / "test_labels.npy", np.zeros(5, np.int64))
    with pytest.raises(ValueError, match=r"test files disagree .*test_labels.npy: 5"):
        AVMNISTDataModule(root, val_size=4).setup("test")


def test_bad_rows_are_named_by_file_and_index_and_can_be_skipped(tmp_path):
    root = write_avmnist(tmp_path / "avmnist")
    images = np.load(root / "image" / "train_data.npy")
    images[2, 100] = np.nan
    np.save(root / "image" / "train_data.npy", images)
    labels = np.load(root / "train_labels.npy")
    labels[9] = 12  # a validation row (the last 4 of 12)
    np.save(root / "train_labels.npy", labels)
    with pytest.raises(ValueError, match=r"image/train_data.npy: train index 2: non-finite"):
        AVMNISTDataModule(root, val_size=4).setup("fit")
    dm = AVMNISTDataModule(root, val_size=4, on_bad_sample="skip")
    assert len(dm.dataset("train", processed=False)) == 7
    assert len(dm.dataset("val", processed=False)) == 3
    assert [(b.stage, b.row) for b in dm.bad_samples] == [("train", "index 2"), ("val", "index 9")]
    assert "label 12 is not a class index in [0, 10)" in dm.bad_samples[1].reason
    assert dm.bad_samples[1].source.endswith("train_labels.npy")


def test_file_encoders_are_refused_with_the_array_encoders_named(tmp_path, data_dir):
    root = write_avmnist(tmp_path / "avmnist")
    cfg = compose_config(
        "train", [*FAST, "data=avmnist", f"data.root={root}", *LOADER], tmp_path / "run", data_dir
    )
    with pytest.raises(
        ValueError,
        match=r"model.encoders.image preprocesses files .*"
        r"model/encoders/image=lenet.*experiment=avmnist",
    ):
        build_data_and_model(cfg)
