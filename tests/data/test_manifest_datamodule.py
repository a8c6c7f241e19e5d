import json

import numpy as np
import pytest

from mmexp.data.audio_io import read_wav, write_wav
from mmexp.data.datamodule import ManifestDataModule
from mmexp.encoders import LogMelCNNEncoder, SmallConvEncoder, SmallTextTransformer
from tests.helpers.manifest_fixture import write_manifest_dataset

COLUMNS = {"image": "picture", "text": "caption"}


def datamodule(root, **kwargs):
    options = {"modalities": ["image", "text", "audio"], "columns": COLUMNS, "batch_size": 3}
    return ManifestDataModule(root, **{**options, **kwargs})


def with_processors(dm):
    encoders = [SmallConvEncoder(8, channels=(4,), image_size=16),
                SmallTextTransformer(8, width=8, depth=1, heads=2),
                LogMelCNNEncoder(8, sample_rate=8000)]
    dm.set_processors({e.modality: e.processor(True) for e in encoders},
                      {e.modality: e.processor(False) for e in encoders})
    return dm


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_manifest_batches_have_every_modality_and_string_labels_mapped(tmp_path, fmt):
    root = write_manifest_dataset(tmp_path, fmt=fmt)
    dm = with_processors(datamodule(root, manifest=f"manifest.{fmt}"))
    assert dm.label_names == ["cat", "dog"]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 16, 16)
    assert batch["text"]["input_ids"].shape[0] == 3
    assert batch["audio"]["waveform"].shape == (3, 800)
    assert set(batch["label"].tolist()) <= {0, 1}
    val = next(iter(dm.val_dataloader()))
    assert val["label"].tolist() == [0, 1, 0]  # manifest order, cat/dog alternate


def test_missing_file_is_named_before_training(tmp_path):
    root = write_manifest_dataset(tmp_path)
    (root / "img" / "val1.png").unlink()
    dm = with_processors(datamodule(root))
    with pytest.raises(FileNotFoundError, match=r"id='val1'.*img/val1.png"):
        dm.setup("fit")


def test_corrupt_image_names_row_and_file(tmp_path):
    root = write_manifest_dataset(tmp_path)
    (root / "img" / "train2.png").write_bytes(b"not a png")
    dm = with_processors(datamodule(root))
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"id='train2'.*corrupt image file .*train2.png"):
        dm.datasets["train"][2]


def test_empty_text_and_unknown_label_are_named(tmp_path):
    root = write_manifest_dataset(tmp_path)
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    rows[1]["caption"] = " "
    rows[2]["label"] = 7
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "meta.json").write_text(json.dumps({"label_names": ["cat", "dog"]}))
    dm = with_processors(datamodule(root))
    with pytest.raises(ValueError, match=r"id='train2'.*unknown label 7"):
        dm.setup("fit")
    rows[2]["label"] = "cat"
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = with_processors(datamodule(root))
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"id='train1'.*text: empty text"):
        dm.datasets["train"][1]


def test_missing_column_and_missing_split_are_named(tmp_path):
    root = write_manifest_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"no value for column\(s\) \['image', 'text'\]"):
        datamodule(root, columns={}).setup()
    with pytest.raises(ValueError, match=r"no rows for split\(s\) \['val'\]"):
        datamodule(root, split_names={"train": "train", "val": "dev", "test": "test"}).setup()


def test_missing_manifest_and_bad_json_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        datamodule(tmp_path).setup()
    (tmp_path / "manifest.jsonl").write_text('{"split": "train"}\n{oops\n')
    with pytest.raises(ValueError, match=r"manifest.jsonl:2: not valid JSON"):
        datamodule(tmp_path).setup()


def test_wav_round_trip_and_corrupt_wav(tmp_path):
    wave = np.sin(np.linspace(0, 20, 1000)).astype(np.float32) * 0.5
    write_wav(tmp_path / "a.wav", wave, 8000)
    back, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and np.abs(back - wave).max() < 1 / 32767
    (tmp_path / "b.wav").write_bytes(b"RIFF1234")
    with pytest.raises(ValueError, match="b.wav"):
        read_wav(tmp_path / "b.wav")


def test_processors_must_cover_every_modality(tmp_path):
    dm = datamodule(write_manifest_dataset(tmp_path))
    with pytest.raises(ValueError, match="audio"):
        dm.set_processors({"image": None, "text": None}, {"image": None, "text": None})
