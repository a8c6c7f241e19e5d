import numpy as np
import pytest
import torch
from PIL import Image

from mmexp.encoders import LogMelCNNEncoder, SmallConvEncoder, SmallTextTransformer, masked_mean


def test_masked_mean_ignores_padding_and_handles_empty_rows():
    tokens = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(tokens, mask).squeeze(-1).tolist() == [2.0, 0.0]


def test_image_encoder_tokens_mask_pooled_from_processed_pil_images():
    encoder = SmallConvEncoder(out_dim=48, channels=(8, 16), image_size=32)
    processor = encoder.processor(train=False)
    images = [Image.fromarray(np.full((40, 40, 3), v, dtype=np.uint8)) for v in (0, 128)]
    out = encoder(processor.collate([processor(image) for image in images]))
    assert out.tokens.shape == (2, 64, 48)  # 32 / 2**2 = 8 -> 8 * 8 tokens
    assert out.mask.all()
    assert torch.allclose(out.pooled, out.tokens.mean(1))


def test_image_encoder_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        SmallConvEncoder(out_dim=8, channels=(8,))(torch.zeros(2, 1, 32, 32))


def test_text_encoder_masks_padding_so_padding_does_not_change_features():
    torch.manual_seed(0)
    encoder = SmallTextTransformer(out_dim=32, width=32, depth=1, heads=2).eval()
    processor = encoder.processor(train=False)
    alone = encoder(processor.collate(["a red box"]))
    padded = encoder(processor.collate(["a red box", "a much longer caption than the first"]))
    length = int(alone.mask.sum())
    assert padded.mask[0].sum() == length and not padded.mask[0, length:].any()
    assert torch.allclose(alone.pooled[0], padded.pooled[0], atol=1e-5)


def test_text_processor_truncates_to_max_length():
    encoder = SmallTextTransformer(out_dim=16, width=16, depth=1, heads=2, max_length=8)
    batch = encoder.processor(train=True).collate(["x" * 50])
    assert batch["input_ids"].shape == (1, 8)


def test_audio_encoder_masks_frames_beyond_each_clip_length():
    encoder = LogMelCNNEncoder(out_dim=24, sample_rate=8000, max_seconds=1.0).eval()
    processor = encoder.processor(train=False)
    clips = [(np.zeros(8000, np.float32), 8000), (np.zeros(2000, np.float32), 8000)]
    out = encoder(processor.collate([processor(clip) for clip in clips]))
    frames = 8000 // 80 + 1  # 101 frames -> 51 -> 26 after two stride-2 convs
    assert out.tokens.shape == (2, 26, 24)
    assert out.mask[0].all()
    assert out.mask[1].sum() == ((2000 // 80 + 1 + 1) // 2 + 1) // 2
    assert frames == 101


def test_audio_processor_rejects_other_sample_rate():
    processor = LogMelCNNEncoder(out_dim=8, sample_rate=8000).processor(train=False)
    with pytest.raises(ValueError, match="16000 Hz.*8000 Hz"):
        processor((np.zeros(100, np.float32), 16000))
