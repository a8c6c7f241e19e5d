"""The frame-based video encoder: per-frame image encoding, temporal pooling, processing."""

from __future__ import annotations

import functools

import pytest
import torch

from mmexp.data.frame_sampling import FrameSampler
from mmexp.data.video_io import probe_video
from mmexp.encoders import FrameVideoEncoder, SmallConvEncoder
from mmexp.encoders.processors import ImageProcessor
from tests.helpers.video_files import frame_level, write_video

WIDTH, FRAMES = 16, 4


def encoder(temporal: str = "mean", strategy: str = "uniform") -> FrameVideoEncoder:
    torch.manual_seed(0)
    frames = functools.partial(SmallConvEncoder, channels=[8, 16], image_size=32)
    return FrameVideoEncoder(
        WIDTH, frames, FrameSampler(strategy, num_frames=FRAMES), temporal=temporal
    ).eval()


def test_mean_pooling_is_the_mean_of_the_frame_encoders_own_outputs():
    video = encoder("mean")
    clips = torch.randn(3, FRAMES, 3, 32, 32)
    with torch.no_grad():
        output = video(clips)
        each = torch.stack([video.frames(clips[:, t]).pooled for t in range(FRAMES)], dim=1)
    assert output.tokens.shape == (3, FRAMES, WIDTH) and output.mask.all()
    torch.testing.assert_close(output.tokens, each)
    torch.testing.assert_close(output.pooled, each.mean(dim=1))


def test_the_temporal_transformer_sees_frame_order():
    video = encoder("transformer")
    clips = torch.randn(2, FRAMES, 3, 32, 32)
    with torch.no_grad():
        forward = video(clips).pooled
        reversed_ = video(clips.flip(1)).pooled
    assert forward.shape == (2, WIDTH)
    # the position embeddings make the order matter; mean pooling alone would not
    assert not torch.allclose(forward, reversed_, atol=1e-5)
    assert video.position.requires_grad and not encoder("mean").position.requires_grad


def test_clips_of_another_length_or_rank_are_refused():
    with pytest.raises(ValueError, match="clips of 3 frames, but the encoder was built for 4"):
        encoder()(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        encoder()(torch.randn(1, 3, 32, 32))


def test_a_frame_encoder_for_another_modality_is_refused():
    from mmexp.encoders import SmallTextTransformer

    with pytest.raises(ValueError, match="must encode images"):
        FrameVideoEncoder(WIDTH, SmallTextTransformer, FrameSampler(num_frames=2))


def test_the_processor_reads_the_sampled_frames_prepared_as_the_image_tower_does(tmp_path):
    video = encoder()
    clip_file = probe_video(write_video(tmp_path / "clip.mp4", num_frames=12))
    processor = video.processor(train=False)
    clip = processor(clip_file)
    assert clip.shape == (FRAMES, 3, 32, 32)
    # uniform over 12 frames: 1, 4, 7, 10, normalised as the image processor does
    expected = [frame_level(i) / 255 for i in (1, 4, 7, 10)]
    normalise = ImageProcessor(32).transform.transforms[-1]
    std = torch.tensor(normalise.std)[:, None, None]
    mean = torch.tensor(normalise.mean)[:, None, None]
    levels = (clip * std + mean).mean(dim=(1, 2, 3))
    assert levels.tolist() == pytest.approx(expected, abs=0.02)
    assert processor.collate([clip, clip]).shape == (2, FRAMES, 3, 32, 32)


def test_random_clip_sampling_blocks_the_feature_cache():
    assert encoder(strategy="uniform").augment is False
    assert encoder(strategy="segment").augment is True


def test_a_frozen_frame_tower_split_in_two_computes_the_same_outputs():
    from mmexp.encoders import TimmImageEncoder
    from mmexp.encoders.base import CachedFeatures
    from tests.helpers.tiny_models import TINY_VIT

    torch.manual_seed(0)
    frames = functools.partial(TimmImageEncoder, pretrained=False, freeze="frozen", **TINY_VIT)
    video = FrameVideoEncoder(
        WIDTH, frames, FrameSampler(num_frames=FRAMES), temporal="transformer"
    ).eval()
    assert video.cache_blocker() is None  # frozen backbone, frames at fixed places
    clips = torch.randn(2, FRAMES, 3, 32, 32)
    with torch.no_grad():
        stored = video.frozen_features(clips, tokens=True)
        assert stored["frames"].shape[:2] == (2, FRAMES)
        split, whole = video(CachedFeatures(stored)), video(clips)
    torch.testing.assert_close(split.pooled, whole.pooled)
    torch.testing.assert_close(split.tokens, whole.tokens)


def test_a_random_training_transform_is_the_same_for_every_frame_of_a_clip(tmp_path):
    from mmexp.encoders.video import VideoProcessor

    frames = functools.partial(SmallConvEncoder, channels=[8, 16], image_size=32, augment=True)
    video = FrameVideoEncoder(WIDTH, frames, FrameSampler("uniform", num_frames=FRAMES))
    processor = video.processor(train=True)
    assert isinstance(processor, VideoProcessor)
    clip_file = probe_video(write_video(tmp_path / "clip.mp4", num_frames=8, colour=0))
    torch.manual_seed(0)
    clip = processor(clip_file)
    # every frame shows the same square: one shift for the clip leaves them equal
    for frame in clip[1:]:
        torch.testing.assert_close(frame, clip[0], atol=0.05, rtol=0)
    # and the draw differs from clip to clip
    assert not torch.allclose(processor(clip_file), clip, atol=0.05)
