from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmexp.builders import build_encoders
from mmexp.encoders import LogMelCNNEncoder, SmallConvEncoder, SmallTextTransformer, masked_mean
from mmexp.encoders.freezing import count_parameters
from tests.fusion.test_fairness import parse_figure


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


def test_zero_padded_spectrogram_frames_do_not_depend_on_what_follows_the_clip():
    from mmexp.encoders.audio_logmel import LogMelSpectrogram

    torch.manual_seed(0)
    clip = torch.randn(1, 1000)
    followed = torch.cat([clip, torch.zeros(1, 3000)], dim=1)
    frames = 1000 // 80 + 1
    zeros = LogMelSpectrogram(8000, 256, 80, 40, pad_mode="constant")
    torch.testing.assert_close(zeros(followed)[..., :frames], zeros(clip), atol=1e-5, rtol=1e-5)
    # Reflected ends (the default, audio=logmel_cnn's) differ in the last frames.
    reflect = LogMelSpectrogram(8000, 256, 80, 40)
    assert not torch.allclose(reflect(followed)[..., :frames], reflect(clip), atol=1e-3)


def readme_encoder_rows() -> list[tuple[str, str, str]]:
    """``(modality, choice, params)`` of each row of the README's built-in encoder table."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("| modality | `model/encoders/<modality>=` |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[0], cells[1].split("`")[1], cells[-1]))
    return rows


def test_readme_encoder_table_matches_the_built_encoders(make_train_cfg):
    rows = readme_encoder_rows()
    for modality in ("text", "audio"):  # every shipped choice that reads raw data from scratch
        shipped = {"transformer", "lstm", "gru"} if modality == "text" else {"lstm", "cnn1d"}
        assert shipped <= {choice for m, choice, _ in rows if m == modality}
    for modality, choice, figure in rows:
        choose = f"model/encoders/{modality}={choice}"
        cfg = make_train_cfg(f"data.modalities=[{modality}]", choose, "model.width=128")
        (encoder,) = build_encoders(cfg).values()
        expected, tolerance = parse_figure(figure)
        assert abs(count_parameters(encoder)[0] - expected) <= tolerance, (modality, choice)
