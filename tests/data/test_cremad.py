"""CREMA-D from its release layout (AudioWAV/*.wav, VideoFlash/*.flv) with Peng et al.'s split."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mmexp.data.audio_io import write_wav
from mmexp.data.sets.cremad import CremaDDataModule, emotion_of, peng2022_test_clips
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.video_files import write_video

# Two of Peng et al.'s test clips and twelve of their training clips (train.csv)
TEST_CLIPS = ["1001_DFA_HAP_XX", "1001_DFA_SAD_XX"]
TRAIN_CLIPS = [
    f"10{actor:02d}_{sentence}_{emotion}_XX"
    for actor in (10, 11)
    for sentence in ("TIE", "DFA")
    for emotion in ("ANG", "NEU", "HAP")
]


def write_release(root, clips, video_folder="VideoFlash", suffix=".flv"):
    (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
    for clip in clips:
        tone = np.sin(np.arange(8000) * (0.05 + 0.05 * ("ANG" in clip))).astype(np.float32)
        write_wav(root / "AudioWAV" / f"{clip}.wav", 0.3 * tone, 16000)
        write_video(
            root / video_folder / f"{clip}{suffix}", num_frames=6, colour=0 if "ANG" in clip else 2
        )
    return root


def module(root, **options) -> CremaDDataModule:
    options.setdefault("num_workers", 0)
    options.setdefault("persistent_workers", False)
    options.setdefault("val_size", 2)
    return CremaDDataModule(root=root, check_counts="off", **options)


def test_the_shipped_split_is_peng_et_als_744_test_clips():
    clips = peng2022_test_clips()
    assert len(clips) == 744
    assert set(TEST_CLIPS) <= clips and not set(TRAIN_CLIPS) & clips
    # their test.csv per emotion
    counts = {
        e: sum(c.split("_")[2] == e for c in clips)
        for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
    }
    assert counts == {"ANG": 105, "DIS": 129, "FEA": 133, "HAP": 123, "NEU": 114, "SAD": 140}


def test_labels_come_from_the_clip_names_and_bad_names_are_refused():
    assert emotion_of("1001_DFA_ANG_XX") == "anger"
    assert emotion_of("1091_WSI_NEU_XX") == "neutral"
    with pytest.raises(
        ValueError, match="'1001_DFA_XXX_XX' is not <actor>_<sentence>_<emotion>_<level>"
    ):
        emotion_of("1001_DFA_XXX_XX")


def test_splits_follow_the_list_with_a_stratified_validation_holdout(tmp_path):
    data = module(write_release(tmp_path, TEST_CLIPS + TRAIN_CLIPS))
    splits = data.read_splits()
    assert sorted(r["id"] for r in splits["test"]) == sorted(TEST_CLIPS)
    assert len(splits["val"]) == 2 and len(splits["train"]) == len(TRAIN_CLIPS) - 2
    assert not {r["id"] for r in splits["val"]} & {r["id"] for r in splits["train"]}
    row = splits["test"][0]
    assert (
        row["video"] == f"VideoFlash/{row['id']}.flv"
        and row["audio"] == f"AudioWAV/{row['id']}.wav"
    )
    # the same seed holds out the same clips
    assert module(tmp_path).read_splits()["val"] == splits["val"]
    assert data.meta["label_names"] == ["neutral", "happy", "sad", "fear", "disgust", "anger"]


def test_counts_are_checked_against_the_release(tmp_path, caplog):
    write_release(tmp_path, TEST_CLIPS + TRAIN_CLIPS)
    with pytest.raises(ValueError, match=r"train: 12 found, 6698 published.*test: 2 found, 744"):
        CremaDDataModule(root=tmp_path, check_counts="raise").read_splits()
    with caplog.at_level(logging.WARNING):
        CremaDDataModule(root=tmp_path, check_counts="warn").read_splits()
    assert "not comparable" in caplog.text


def test_a_missing_folder_says_where_to_get_the_release(tmp_path):
    write_release(tmp_path, TRAIN_CLIPS[:2])
    with pytest.raises(FileNotFoundError, match="missing folder .*VideoMP4.*CREMA-D"):
        module(tmp_path, video_folder="VideoMP4").read_splits()
    with pytest.raises(ValueError, match="video_folder='Videos'"):
        module(tmp_path, video_folder="Videos")


def test_a_clip_without_its_video_is_named(tmp_path):
    write_release(tmp_path, TEST_CLIPS + TRAIN_CLIPS)
    (tmp_path / "VideoFlash" / f"{TRAIN_CLIPS[3]}.flv").unlink()
    data = module(tmp_path)
    rows = data.read_splits()
    stage = next(s for s in ("train", "val") if any(r["id"] == TRAIN_CLIPS[3] for r in rows[s]))
    with pytest.raises((FileNotFoundError, ValueError), match=TRAIN_CLIPS[3]):
        data.screen(stage, rows[stage])


def test_audio_and_video_train_on_the_release_layout(tmp_path, data_dir):
    write_release(tmp_path / "cremad", TEST_CLIPS + TRAIN_CLIPS, "VideoMP4", ".mp4")
    fast = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
    overrides = [
        *fast,
        "data=cremad",
        f"data.root={tmp_path / 'cremad'}",
        "data.video_folder=VideoMP4",
        "data.val_size=2",
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
    assert result["metrics"]["test/acc"] == result["metrics"]["test/acc"]  # finite, scored


def test_a_clone_without_its_lfs_media_is_named(tmp_path):
    write_release(tmp_path, TRAIN_CLIPS[:2])
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"
    (tmp_path / "AudioWAV" / f"{TRAIN_CLIPS[0]}.wav").write_text(pointer)
    with pytest.raises(FileNotFoundError, match="Git LFS pointer.*git lfs pull"):
        module(tmp_path).read_splits()
