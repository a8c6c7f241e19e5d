"""AVE from its release layout: mp4 clips whose sound and frames are the two modalities."""

from __future__ import annotations

import logging

import pytest

from mmexp.data.dataset import decode
from mmexp.data.sets.ave import AVEDataModule, read_split_file
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.video_files import write_video

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
EVENTS = ("Church bell", "Bark")


def write_release(root, per_split=None):
    per_split = per_split or {"train": 8, "val": 4, "test": 4}
    for split, count in per_split.items():
        lines = [HEADER]
        for i in range(count):
            video_id = f"{split}{i:03d}xYz"
            event = EVENTS[i % 2]
            write_video(
                root / "AVE" / f"{video_id}.mp4", num_frames=5, colour=0 if i % 2 == 0 else 2
            )
            lines.append(f"{event}&{video_id}&good&{i % 3}&{8 + i % 3}")
        name = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}[split]
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def module(root, **options):
    options.setdefault("check_counts", "off")
    return AVEDataModule(root=root, num_workers=0, persistent_workers=False, **options)


def test_split_files_give_rows_with_both_modalities_from_the_mp4(tmp_path):
    splits = module(write_release(tmp_path)).read_splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "val": 4, "test": 4}
    row = splits["train"][1]
    assert row == {
        "id": "train001xYz",
        "audio": "AVE/train001xYz.mp4",
        "video": "AVE/train001xYz.mp4",
        "label": "Bark",
        "quality": "good",
        "start_s": 1.0,
        "end_s": 9.0,
    }
    assert module(tmp_path).meta["label_names"] == ["Bark", "Church bell"]


def test_the_sound_track_of_an_mp4_is_the_audio(tmp_path):
    write_release(tmp_path, {"train": 1})
    waveform, rate = decode("audio", "AVE/train000xYz.mp4", tmp_path)
    assert rate == 16000 and waveform.ndim == 1 and 0.05 < abs(waveform).max() <= 1.0
    assert len(waveform) >= 0.5 * 16000  # half a second of tone (5 frames at 10 fps)


def test_counts_are_checked_against_the_release(tmp_path, caplog):
    write_release(tmp_path)
    with pytest.raises(ValueError, match="train: 8 found, 3339 published"):
        module(tmp_path, check_counts="raise").read_splits()
    with caplog.at_level(logging.WARNING):
        module(tmp_path, check_counts="warn").read_splits()
    assert "events: 2 found, 28 published" in caplog.text


def test_a_malformed_line_is_named_with_its_file_and_number(tmp_path):
    path = tmp_path / "trainSet.txt"
    path.write_text(f"{HEADER}\nBark&abc&good&0&10\nBark&abc&good&zero&10\n")
    with pytest.raises(ValueError, match=r"trainSet.txt, line 3: start and end seconds 'zero'"):
        read_split_file(path)
    path.write_text(f"{HEADER}\nBark&abc&good\n")
    with pytest.raises(ValueError, match="line 2: 3 field"):
        read_split_file(path)


def test_missing_files_say_where_to_get_the_release(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing folder .*AVE.*AVE-ECCV18"):
        module(tmp_path).read_splits()
    (tmp_path / "AVE").mkdir()
    with pytest.raises(FileNotFoundError, match="trainSet.txt.*AVE-ECCV18"):
        module(tmp_path).read_splits()


def test_audio_and_video_train_on_the_release_layout(tmp_path, data_dir):
    write_release(tmp_path / "ave")
    fast = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
    overrides = [
        *fast,
        "data=ave",
        f"data.root={tmp_path / 'ave'}",
        "data.check_counts=off",
        "+model/encoders/video=frames",
        "model.encoders.video.sampler.num_frames=2",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.batch_size=4",
        "trainer.max_epochs=1",
    ]
    result = train(compose_config("train", overrides, tmp_path / "run", data_dir))
    assert 0 <= result["metrics"]["test/acc"] <= 1


def test_a_split_file_with_a_byte_order_mark_still_skips_its_header(tmp_path):
    path = tmp_path / "testSet.txt"
    path.write_bytes(f"\ufeff{HEADER}\nBark&abc&good&0&10\n".encode())
    assert [row["id"] for row in read_split_file(path)] == ["abc"]
