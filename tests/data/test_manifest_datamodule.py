import json

import numpy as np
import pytest

from mmexp.data.audio_io import read_wav, write_wav
from mmexp.data.datamodule import ManifestDataModule
from mmexp.encoders import LogMelCNNEncoder, SmallConvEncoder, SmallTextTransformer
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.manifest_fixture import write_manifest_dataset

COLUMNS = {"image": "picture", "text": "caption"}


def datamodule(root, **kwargs):
    options = {"modalities": ["image", "text", "audio"], "columns": COLUMNS, "batch_size": 3}
    return ManifestDataModule(root, **{**options, **kwargs})


def with_processors(dm):
    encoders = [
        SmallConvEncoder(8, channels=(4,), image_size=16),
        SmallTextTransformer(8, width=8, depth=1, heads=2),
        LogMelCNNEncoder(8, sample_rate=8000),
    ]
    dm.set_processors(
        {e.modality: e.processor(True) for e in encoders},
        {e.modality: e.processor(False) for e in encoders},
    )
    return dm


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
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
    with pytest.raises(ValueError, match=r"val row 1 \(id='val1'\): missing image file .*val1.png"):
        dm.setup("fit")


def test_corrupt_image_names_row_and_file(tmp_path):
    root = write_manifest_dataset(tmp_path)
    (root / "img" / "train2.png").write_bytes(b"not a png")
    dm = with_processors(datamodule(root))
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"id='train2'.*corrupt image file .*train2.png"):
        dm.datasets["train"][2]


def _rewrite(root, rows):
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_empty_text_and_unknown_label_are_all_named_at_setup(tmp_path):
    root = write_manifest_dataset(tmp_path)
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    rows[1]["caption"] = " "
    rows[2]["label"] = 7
    _rewrite(root, rows)
    (root / "meta.json").write_text(json.dumps({"label_names": ["cat", "dog"]}))
    dm = with_processors(datamodule(root))
    with pytest.raises(ValueError, match=r"2 bad sample") as error:
        dm.setup("fit")
    assert "train row 1 (id='train1'): empty text (column 'caption')" in str(error.value)
    assert "train row 2 (id='train2'): unknown label 7" in str(error.value)
    assert "data.on_bad_sample=skip" in str(error.value)


def test_skip_leaves_bad_rows_out_and_records_them(tmp_path):
    root = write_manifest_dataset(tmp_path)
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    rows[1]["caption"] = ""
    _rewrite(root, rows)
    (root / "img" / "val1.png").unlink()
    dm = with_processors(datamodule(root, on_bad_sample="skip"))
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3 and len(dm.datasets["val"]) == 3
    assert [(b.stage, b.row) for b in dm.bad_samples] == [
        ("train", "row 1 (id='train1')"),
        ("val", "row 1 (id='val1')"),
    ]
    assert "missing image file" in dm.bad_samples[1].reason


def test_skip_drops_an_undecodable_file_when_read_and_counts_it(tmp_path):
    root = write_manifest_dataset(tmp_path)
    (root / "img" / "train2.png").write_bytes(b"not a png")
    dm = with_processors(datamodule(root, on_bad_sample="skip", batch_size=4))
    dm.setup("fit")
    assert dm.datasets["train"][2] is None
    batch = next(iter(dm.train_dataloader()))
    assert batch["num_skipped"] == 1 and len(batch["label"]) == 3
    assert batch["image"].shape[0] == 3


def test_unknown_bad_sample_policy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="on_bad_sample must be one of"):
        datamodule(tmp_path, on_bad_sample="ignore")


def test_missing_column_and_missing_split_are_named(tmp_path):
    root = write_manifest_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"empty image \(column 'image'\)"):
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


def test_a_run_on_data_with_bad_samples_records_what_it_skipped(tmp_path, data_dir):
    root = write_manifest_dataset(tmp_path / "data", rows_per_split=6)
    (root / "img" / "train3.png").unlink()
    (root / "img" / "train4.png").write_bytes(b"broken")
    fast = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
    cfg = compose_config(
        "train",
        [
            *fast,
            "data=manifest",
            f"data.root={root}",
            "data.modalities=[image,text]",
            "data.columns={image:picture,text:caption}",
            "data.on_bad_sample=skip",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "data.batch_size=6",
            "data.eval_batch_size=6",
        ],
        tmp_path / "run",
        data_dir,
    )
    result = train(cfg)
    skipped = result["data_skipped"]
    assert skipped["counts"] == {"train": 1}
    assert "train3.png" in skipped["samples"][0]["reason"]
    # the undecodable file is found when read: once per epoch, two epochs
    assert result["metrics"]["train/skipped_samples"] == 1
    assert result["metrics"]["test/skipped_samples"] == 0
    assert result["data_labels"] == {}  # cat and dog in every split


def test_a_run_records_a_label_seen_in_one_row(tmp_path, data_dir):
    root = write_manifest_dataset(tmp_path / "data", rows_per_split=6)
    manifest = root / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[1]["label"] = "unheard_of"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    fast = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
    overrides = [
        *fast,
        "data=manifest",
        f"data.root={root}",
        "data.modalities=[image,text]",
        "data.columns={image:picture,text:caption}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.batch_size=6",
        "trainer.max_epochs=1",
    ]
    result = train(compose_config("train", overrides, tmp_path / "run", data_dir))
    assert set(result["data_labels"]) == {"unheard_of"}
    assert "one_row" in result["data_labels"]["unheard_of"]["problems"]
