"""Video files: probing, decoding the chosen frames, and the errors for bad files."""

from __future__ import annotations

import pytest
import torch

from mmexp.data.dataset import decode
from mmexp.data.frame_sampling import FrameSampler
from mmexp.data.video_io import probe_video, read_frames
from tests.helpers.video_files import FORMATS, frame_level, write_video


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_each_container_is_probed_and_its_frames_read_back(tmp_path, suffix):
    path = write_video(tmp_path / f"clip.{suffix}", num_frames=12, fps=10)
    video = probe_video(path)
    assert (video.num_frames, video.fps) == (12, 10.0)
    frames = read_frames(video, [7, 0, 11, 7])
    assert frames.shape == (4, 32, 32, 3)
    # each frame's grey level tells which it is (lossy codecs: within a few levels)
    levels = frames.reshape(4, -1).astype(float).mean(axis=1)
    assert levels == pytest.approx([frame_level(i) for i in (7, 0, 11, 7)], abs=4)


def test_the_manifest_decoder_probes_a_video_path(tmp_path):
    write_video(tmp_path / "videos" / "a.flv")
    video = decode("video", "videos/a.flv", tmp_path)
    assert video.num_frames == 12 and video.path == tmp_path / "videos" / "a.flv"


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing video file .*gone.mp4"):
        decode("video", "gone.mp4", tmp_path)


def test_a_corrupt_file_is_named(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="corrupt video file .*noise.mp4"):
        probe_video(tmp_path / "noise.mp4")


def test_a_truncated_file_fails_naming_it_not_with_fewer_frames(tmp_path):
    path = write_video(tmp_path / "long.avi", num_frames=40)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.avi"):
        video = probe_video(cut)  # AVI's header still says 40 frames
        read_frames(video, [39])


def test_frames_outside_the_video_are_refused(tmp_path):
    video = probe_video(write_video(tmp_path / "v.mp4", num_frames=5))
    with pytest.raises(IndexError, match="outside the 5 frames"):
        read_frames(video, [5])


def test_video_stored_inline_is_refused_by_name():
    with pytest.raises(ValueError, match="clip.mp4 is stored inline"):
        decode("video", {"bytes": b"...", "path": "clip.mp4"}, None)


def test_uniform_sampling_takes_segment_centres():
    sampler = FrameSampler("uniform", num_frames=4)
    # 10 frames in 4 segments of 2.5: centres 1.25, 3.75, 6.25, 8.75
    assert sampler(10, 25.0, train=True) == [1, 3, 6, 8]
    assert sampler(10, 25.0, train=False) == [1, 3, 6, 8]
    assert sampler(2, 25.0, train=False) == [0, 0, 1, 1]  # fewer frames than the clip


def test_segment_sampling_is_random_within_each_segment_in_training_only():
    sampler = FrameSampler("segment", num_frames=4)
    assert sampler(100, 25.0, train=False) == [12, 37, 62, 87]
    torch.manual_seed(0)
    first = sampler(100, 25.0, train=True)
    torch.manual_seed(0)
    assert sampler(100, 25.0, train=True) == first  # seeded like every augmentation
    assert all(25 * i <= index < 25 * (i + 1) for i, index in enumerate(first))
    draws = {tuple(sampler(100, 25.0, train=True)) for _ in range(20)}
    assert len(draws) > 15


def test_fixed_rate_sampling_strides_by_the_rate_ratio():
    sampler = FrameSampler("fps", num_frames=4, fps=5.0)
    # 25 fps to 5: every 5th frame; 4 frames span 15 frames, centred in 100: start 42
    assert sampler(100, 25.0, train=False) == [42, 47, 52, 57]
    torch.manual_seed(0)
    clip = sampler(100, 25.0, train=True)
    assert [b - a for a, b in zip(clip, clip[1:], strict=False)] == [5, 5, 5]
    assert 0 <= clip[0] <= 84
    # a video shorter than the clip repeats its last frame
    assert sampler(8, 25.0, train=False) == [0, 5, 7, 7]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "dense"}, "'dense'"),
        ({"num_frames": 0}, "at least 1"),
        ({"strategy": "fps", "fps": 0}, "fps must be positive"),
    ],
)
def test_bad_sampler_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FrameSampler(**kwargs)


def test_a_stored_frame_count_one_above_the_decodable_frames_gives_the_last_frame(tmp_path):
    import dataclasses

    video = probe_video(write_video(tmp_path / "v.mp4", num_frames=6))
    overcounted = dataclasses.replace(video, num_frames=7)  # as an edit list can report
    frames = read_frames(overcounted, [5, 6])
    assert frames[1].mean() == pytest.approx(frames[0].mean())  # frame 5 stands in for 6


def test_the_sound_track_of_a_stereo_file_is_the_mean_of_its_channels(tmp_path):
    import av
    import numpy as np

    from mmexp.data.video_io import read_audio_track

    path = tmp_path / "stereo.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "stereo"
        t = np.arange(16000) / 16000
        left = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        planes = np.stack([left, left])  # the same tone on both channels
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout="stereo")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    waveform, rate = read_audio_track(path)
    assert rate == 16000
    # the mean of two equal channels is the tone itself: amplitude 0.5, not 0.5 * sqrt(2)
    assert np.abs(waveform[2000:14000]).max() == pytest.approx(0.5, abs=0.05)
