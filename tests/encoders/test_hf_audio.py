import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmexp.encoders import HFAudioEncoder, masked_mean
from mmexp.encoders.audio_features import HFAudioProcessor, resample
from tests.helpers.tiny_models import write_tiny_ast, write_tiny_wav2vec2, write_tiny_whisper


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_audio")
    return {
        "wav2vec2": write_tiny_wav2vec2(root / "wav2vec2"),
        "ast": write_tiny_ast(root / "ast"),
        "whisper": write_tiny_whisper(root / "whisper"),
    }


def _clip(seconds: float, rate: int = 8000, seed: int = 0) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(int(seconds * rate)).astype(np.float32), rate


def _encode(encoder: HFAudioEncoder, clips: list[tuple[np.ndarray, int]]):
    processor = pickle.loads(pickle.dumps(encoder.processor(train=False)))
    batch = processor.collate([processor(clip) for clip in clips])
    with torch.no_grad():
        return batch, encoder(batch)


def test_resample_doubles_the_length_from_8_to_16_khz_and_keeps_a_tone():
    t = np.arange(8000) / 8000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    up = resample(tone, 8000, 16000)
    assert up.dtype == np.float32 and len(up) == 2 * len(tone)
    expected = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(up[200:-200] - expected[200:-200]).max() < 0.02  # away from the edges
    assert np.array_equal(resample(tone, 8000, 8000), tone)
    with pytest.raises(ValueError, match="positive"):
        resample(tone, 0, 16000)


def test_wav2vec2_masks_the_frames_of_a_shorter_clip(model_dirs):
    encoder = HFAudioEncoder(out_dim=16, name_or_path=str(model_dirs["wav2vec2"])).eval()
    processor = encoder.processor(train=False)
    assert isinstance(processor, HFAudioProcessor) and processor.sample_rate == 16000
    assert len(processor(_clip(0.5))) == 8000  # 0.5 s at 8 kHz resampled to 16 kHz
    batch, out = _encode(encoder, [_clip(1.0), _clip(0.5, seed=1)])
    assert batch["input_values"].shape == (2, 16000)
    assert batch["lengths"].tolist() == [16000, 8000]
    frames = out.tokens.shape[1]
    assert out.tokens.shape == (2, frames, 16) and frames == 49  # ~20 ms per frame
    assert out.mask[0].all()
    assert int(out.mask[1].sum()) == 24 and not out.mask[1, 24:].any()
    assert torch.allclose(out.pooled, masked_mean(out.tokens, out.mask))
    # The short clip's features do not depend on the padding after it.
    _, alone = _encode(encoder, [_clip(0.5, seed=1)])
    assert torch.allclose(alone.pooled[0], out.pooled[1], atol=1e-4)


def test_ast_patch_tokens_are_all_real(model_dirs):
    encoder = HFAudioEncoder(out_dim=16, name_or_path=str(model_dirs["ast"])).eval()
    batch, out = _encode(encoder, [_clip(0.5), _clip(0.2, seed=1)])
    assert batch["input_values"].shape == (2, 64, 32)  # frames x mel bins, fixed length
    # 2 prefix tokens + (32 mel / 16) x (64 frames / 16) patches
    assert out.tokens.shape == (2, 2 + 2 * 4, 16)
    assert out.mask.all() and out.pooled.shape == (2, 16)


def test_whisper_keeps_only_the_encoder_and_masks_frames_past_the_clip(model_dirs):
    encoder = HFAudioEncoder(out_dim=8, name_or_path=str(model_dirs["whisper"])).eval()
    assert type(encoder.backbone).__name__ == "WhisperEncoder"
    batch, out = _encode(encoder, [_clip(1.0), _clip(0.5, seed=1)])
    assert batch["input_features"].shape == (2, 16, 3000)  # the fixed 30 s window
    assert out.tokens.shape == (2, 1500, 8)
    assert out.mask.sum(1).tolist() == [50, 25]  # 10 ms mel hop, conv stride 2


def test_missing_folder_and_offline_hub_name_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"model\.encoders\.audio\.name_or_path"):
        HFAudioEncoder(out_dim=8, name_or_path=str(tmp_path / "nope"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not be fetched.*save_pretrained"):
        HFAudioEncoder(out_dim=8, name_or_path="mmexp-tests/no-such-audio-model")
    with pytest.raises(ValueError, match=r"model\.encoders\.audio\.pooling"):
        HFAudioEncoder(out_dim=8, name_or_path=str(tmp_path), pooling="cls")
