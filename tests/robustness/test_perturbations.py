"""Seeded per-modality perturbations: identity at level 0, determinism, strength, wrapping."""

from __future__ import annotations

import functools
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from mmexp.encoders.array_image import ArrayImageProcessor
from mmexp.encoders.feature_sequence import FeatureSequenceProcessor
from mmexp.encoders.processors import ImageProcessor, TextProcessor, WaveformProcessor
from mmexp.robustness.perturbations import (
    AudioClipping,
    AudioNoise,
    GaussianImageNoise,
    ImageBlur,
    ImageOcclusion,
    PerturbedProcessor,
    SequenceGaussianNoise,
    TimeStepDropout,
    check_applies,
    value_kind,
)
from mmexp.robustness.text_perturbations import Typos, WordDropout, WordSwap

REPO = Path(__file__).resolve().parents[2]
VOCAB = ["the", "a", "red", "blue", "square", "circle", "left", "of", "right", "on"]


def rgb_image(seed: int = 0, side: int = 64) -> Image.Image:
    """A textured RGB image: random blocks smoothed by upsampling."""
    blocks = np.random.default_rng(seed).integers(0, 256, (side // 8, side // 8, 3))
    return Image.fromarray(blocks.astype(np.uint8)).resize((side, side), Image.BILINEAR)


def digit(seed: int = 0, channel: bool = False) -> np.ndarray:
    array = np.random.default_rng(seed).random((28, 28)).astype(np.float32)
    return array[None] if channel else array


def words(count: int, seed: int = 0) -> str:
    picks = np.random.default_rng(seed).integers(len(VOCAB), size=count)
    return " ".join(VOCAB[i] + str(n) for n, i in enumerate(picks))  # distinct words


def clip(seed: int = 0, rate: int = 16000) -> tuple[np.ndarray, int]:
    time = np.arange(rate) / rate
    noise = np.random.default_rng(seed).normal(0, 0.05, rate)
    return (0.8 * np.sin(2 * np.pi * 220 * time) + noise).astype(np.float32), rate


def sequence(seed: int = 0, steps: int = 50) -> np.ndarray:
    scales = np.array([0.1, 1.0, 10.0, 3.0], dtype=np.float32)
    return (np.random.default_rng(seed).normal(size=(steps, 4)) * scales + 1).astype(np.float32)


# Every perturbation with one sample of each value kind it takes.
CASES = [
    (GaussianImageNoise, [rgb_image, digit, functools.partial(digit, channel=True)]),
    (ImageBlur, [rgb_image, digit, functools.partial(digit, channel=True)]),
    (ImageOcclusion, [rgb_image, digit, functools.partial(digit, channel=True)]),
    (Typos, [functools.partial(words, 30)]),
    (WordDropout, [functools.partial(words, 30)]),
    (WordSwap, [functools.partial(words, 30)]),
    (AudioNoise, [clip, lambda seed: digit(seed) * 2 - 1]),
    (AudioClipping, [clip, lambda seed: digit(seed) * 2 - 1]),
    (TimeStepDropout, [sequence]),
    (SequenceGaussianNoise, [sequence]),
]
SAMPLES = [
    pytest.param(cls, make, id=f"{cls.__name__}-{n}")
    for cls, makers in CASES
    for n, make in enumerate(makers)
]
DETERMINISTIC = (ImageBlur, AudioClipping)  # no random draws at all


def as_comparable(value):
    """A value as a numpy array (and its rate) for equality checks."""
    if isinstance(value, Image.Image):
        return np.asarray(value)
    if isinstance(value, tuple):
        return np.concatenate([value[0].astype(np.float64), [value[1]]])
    if isinstance(value, str):
        return np.array(value)
    return np.asarray(value)


def equal(a, b) -> bool:
    return np.array_equal(as_comparable(a), as_comparable(b))


@pytest.mark.parametrize(("cls", "make"), SAMPLES)
def test_level_zero_returns_the_input_and_nothing_is_modified_in_place(cls, make):
    value, copy = make(0), make(0)
    assert equal(cls(level=0.0, seed=3)(value), copy)
    cls(level=0.7, seed=3)(value)
    assert equal(value, copy)  # the input is untouched at a positive level too


@pytest.mark.parametrize(("cls", "make"), SAMPLES)
def test_same_seed_and_value_give_the_same_output_and_other_seeds_differ(cls, make):
    first = cls(level=0.6, seed=1)(make(0))
    assert equal(first, cls(level=0.6, seed=1)(make(0)))
    assert not equal(first, make(0))
    if cls in DETERMINISTIC:
        assert equal(first, cls(level=0.6, seed=2)(make(0)))
    else:
        assert not equal(first, cls(level=0.6, seed=2)(make(0)))


@pytest.mark.parametrize(("cls", "make"), SAMPLES)
def test_outputs_do_not_depend_on_the_order_values_come_in(cls, make):
    values = [make(seed) for seed in range(6)]
    in_order = [cls(level=0.5, seed=4)(value) for value in values]
    shuffled = cls(level=0.5, seed=4)
    order = np.random.default_rng(9).permutation(len(values))
    by_position = {int(i): shuffled(values[i]) for i in order}
    for i, expected in enumerate(in_order):
        assert equal(by_position[i], expected)


def test_draws_follow_the_content_so_different_values_get_different_draws():
    zeros = np.zeros((30, 4), dtype=np.float32)
    one_changed = zeros.copy()
    one_changed[0, 0] = 1.0
    dropped = [TimeStepDropout(level=0.5, seed=0)(steps + 1) for steps in (zeros, one_changed)]
    assert not np.array_equal(dropped[0] == 0, dropped[1] == 0)
    kept = [WordDropout(level=0.5, seed=0)(words(60) + end) for end in (" x", " y")]
    assert kept[0].split()[:-1] != kept[1].split()[:-1]


def test_outputs_are_the_same_in_another_process_with_another_hash_seed():
    text, array = words(40), sequence()
    expected = WordDropout(level=0.4, seed=5)(text), SequenceGaussianNoise(level=0.4, seed=5)(array)
    script = (
        "import pickle, sys\n"
        "from mmexp.robustness.perturbations import SequenceGaussianNoise\n"
        "from mmexp.robustness.text_perturbations import WordDropout\n"
        "text, array = pickle.load(sys.stdin.buffer)\n"
        "out = WordDropout(level=0.4, seed=5)(text), "
        "SequenceGaussianNoise(level=0.4, seed=5)(array)\n"
        "sys.stdout.buffer.write(pickle.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps((text, array)),
        capture_output=True,
        env=env,
        check=True,
        timeout=120,
    )
    other_text, other_array = pickle.loads(done.stdout)
    assert other_text == expected[0]
    assert np.array_equal(other_array, expected[1])


def mean_change(cls, value, level: float, **options) -> float:
    out = cls(level=level, seed=0, **options)(value)
    return float(np.abs(as_comparable(out).astype(float) - as_comparable(value)).mean())


@pytest.mark.parametrize("cls", [GaussianImageNoise, ImageBlur])
@pytest.mark.parametrize("make", [rgb_image, digit])
def test_image_degradation_grows_with_the_level(cls, make):
    changes = [mean_change(cls, make(0), level) for level in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    assert changes[0] == 0.0
    assert all(a < b for a, b in zip(changes, changes[1:], strict=False))


def test_image_noise_has_the_documented_standard_deviation():
    flat = np.full((200, 200), 0.5, dtype=np.float32)  # mid-grey: clipping stays rare
    out = GaussianImageNoise(level=0.2, seed=0, scale=0.5)(flat)
    assert (out - flat).std() == pytest.approx(0.1, rel=0.03)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    spread = GaussianImageNoise(level=0.2, seed=0, scale=0.5, array_range=(0, 255))
    assert (spread(flat * 255) - flat * 255).std() == pytest.approx(25.5, rel=0.03)


def test_array_blur_is_a_sampled_gaussian_kernel():
    delta = np.zeros((15, 15))
    delta[7, 7] = 1.0
    # sigma = level * max_sigma * shorter side = 1 pixel; the kernel reaches 4 sigma.
    out = ImageBlur(level=1.0, max_sigma=1 / 15)(delta)
    offsets = np.arange(-4, 5)
    kernel = np.exp(-(offsets**2) / 2.0)
    kernel /= kernel.sum()
    expected = np.zeros((15, 15))
    expected[3:12, 3:12] = np.outer(kernel, kernel)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # A channel axis is not blurred across: each channel is blurred alone.
    stacked = ImageBlur(level=1.0, max_sigma=1 / 15)(np.stack([delta, 2 * delta]))
    np.testing.assert_allclose(stacked, np.stack([expected, 2 * expected]), atol=1e-12)


def test_pil_blur_is_close_to_a_gaussian_filter_of_the_same_sigma():
    image = rgb_image(side=128)
    out = np.asarray(ImageBlur(level=0.5)(image), dtype=float)  # sigma 0.5*0.05*128 = 3.2
    reference = ndimage.gaussian_filter(np.asarray(image, dtype=float), [3.2, 3.2, 0])
    inner = (slice(16, -16), slice(16, -16))
    gap = np.abs(out - reference)[inner].mean()
    assert gap < 1.0  # in 0..255 units
    assert gap < 0.1 * np.abs(np.asarray(image, dtype=float) - reference)[inner].mean()


@pytest.mark.parametrize("level", [0.1, 0.25, 0.5, 0.75, 1.0])
def test_occlusion_covers_the_level_of_the_image_with_one_rectangle(level):
    white = Image.new("RGB", (64, 48), (255, 255, 255))
    for seed in range(5):
        covered = (np.asarray(ImageOcclusion(level=level, seed=seed)(white)) == 0).all(-1)
        assert covered.mean() == pytest.approx(level, abs=0.03)
        rows, cols = np.nonzero(covered)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == covered.sum()  # a filled rectangle
    ones = np.ones((1, 28, 28), dtype=np.float32)
    out = ImageOcclusion(level=level, seed=0, fill=0.25)(ones)
    assert out.shape == ones.shape
    assert (out == 0.25).mean() == pytest.approx(level, abs=0.05)
    assert set(np.unique(out)) <= {0.25, 1.0}


def test_audio_noise_scales_with_the_peak_and_the_level():
    waveform, rate = clip()
    peak = np.abs(waveform).max()
    for level in (0.1, 0.3):
        noisy, noisy_rate = AudioNoise(level=level, seed=0)(clip())
        assert noisy_rate == rate and noisy.dtype == np.float32 and noisy.shape == waveform.shape
        assert (noisy - waveform).std() == pytest.approx(level * peak, rel=0.03)
    silent = np.zeros(100, dtype=np.float32)
    assert np.array_equal(AudioNoise(level=1.0)(silent), silent)


@pytest.mark.parametrize("level", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_clipping_bounds_the_peak_and_keeps_quiet_samples(level):
    waveform, rate = clip()
    bound = (1 - level) * np.abs(waveform).max()
    clipped, clipped_rate = AudioClipping(level=level)((waveform, rate))
    assert clipped_rate == rate
    assert np.abs(clipped).max() <= bound + 1e-6
    quiet = np.abs(waveform) <= bound
    assert np.array_equal(clipped[quiet], waveform[quiet])
    assert np.allclose(np.abs(clipped[~quiet]), bound)


def binomial_tolerance(count: int, p: float) -> float:
    return 4 * math.sqrt(count * p * (1 - p))


@pytest.mark.parametrize("level", [0.1, 0.3, 0.5, 0.8])
def test_time_dropout_zeroes_about_the_level_of_whole_steps(level):
    steps = np.ones((400, 4), dtype=np.float32)
    out = TimeStepDropout(level=level, seed=2)(steps)
    zero_rows = (out == 0).all(axis=1)
    assert ((out == 0).any(axis=1) == zero_rows).all()  # whole steps or none of them
    assert abs(zero_rows.sum() - 400 * level) <= binomial_tolerance(400, level)
    stronger = TimeStepDropout(level=min(1.0, level + 0.1), seed=2)(steps)
    assert (stronger[zero_rows] == 0).all()  # nested across levels


def test_sequence_noise_follows_each_features_spread():
    steps = sequence(steps=4000)
    noisy = SequenceGaussianNoise(level=0.5, seed=0)(steps)
    np.testing.assert_allclose((noisy - steps).std(axis=0), 0.5 * steps.std(axis=0), rtol=0.05)
    tensor = SequenceGaussianNoise(level=0.5, seed=0)(torch.from_numpy(steps))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    assert np.array_equal(tensor.numpy(), noisy)  # same content, same draws


def test_word_dropout_drops_about_level_of_the_words_and_never_empties():
    text = words(200)
    kept = WordDropout(level=0.5, seed=0)(text).split()
    assert abs(len(kept) - 100) <= binomial_tolerance(200, 0.5)
    assert set(kept) <= set(text.split())
    assert kept == [w for w in text.split() if w in set(kept)]  # order kept
    fewer = WordDropout(level=0.8, seed=0)(text).split()
    assert set(fewer) <= set(kept)
    for seed in range(20):
        assert len(WordDropout(level=1.0, seed=seed)(words(5, seed)).split()) == 1
        assert len(WordDropout(level=0.9, seed=seed)(words(3, seed)).split()) >= 1
    assert WordDropout(level=1.0)("alone") == "alone"
    assert WordDropout(level=1.0)("") == ""


def one_edit_apart(before: str, after: str) -> bool:
    """One swap of adjacent characters, deletion, insertion or replacement."""
    if abs(len(before) - len(after)) == 1:
        short, long = sorted((before, after), key=len)
        return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))
    if len(before) != len(after):
        return False
    diffs = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    swap = len(diffs) == 2 and diffs[1] == diffs[0] + 1 and before[diffs[0]] == after[diffs[1]]
    return len(diffs) == 1 or (swap and before[diffs[1]] == after[diffs[0]])


def test_typos_make_one_edit_in_about_level_of_the_words():
    text = words(200) + " A b ll"
    clean = text.split()
    for level, seed in ((0.5, 0), (1.0, 1)):
        noisy = Typos(level=level, seed=seed)(text).split()
        assert len(noisy) == len(clean)
        changed = [(a, b) for a, b in zip(clean, noisy, strict=True) if a != b]
        assert all(one_edit_apart(a, b) for a, b in changed)
        if level == 1.0:
            assert len(changed) == len(clean)  # even one-letter and doubled-letter words
        else:
            assert abs(len(changed) - 101.5) <= binomial_tolerance(203, level)


def test_word_swap_moves_words_by_one_place_at_most():
    text = words(200)
    clean = text.split()
    swapped = WordSwap(level=0.5, seed=0)(text).split()
    assert sorted(swapped) == sorted(clean)
    moves = [abs(swapped.index(word) - i) for i, word in enumerate(clean)]
    assert max(moves) == 1
    # Half the boundaries swap, but a swap skips the next one: about 199 / 3 swaps.
    assert 40 <= sum(moves) / 2 <= 90


def tokenizer(tmp_path: Path):
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VOCAB]) + "\n")
    return BertTokenizer(str(vocab))


def roundtrip(processor, values):
    batch = processor.collate([processor(value) for value in values])
    again = pickle.loads(pickle.dumps(processor))
    batch_again = again.collate([again(value) for value in values])
    return batch, batch_again


def test_perturbed_processors_keep_shapes_and_survive_pickling(tmp_path):
    images = [rgb_image(seed) for seed in range(3)]
    processor = PerturbedProcessor(ImageProcessor(size=32), GaussianImageNoise(level=0.3))
    batch, again = roundtrip(processor, images)
    assert batch.shape == (3, 3, 32, 32) and torch.equal(batch, again)
    clean = ImageProcessor(size=32).collate([ImageProcessor(size=32)(i) for i in images])
    assert not torch.equal(batch, clean)
    assert not processor.accepts_arrays

    texts = ["the red square left of a blue circle", "a circle on the right"]
    text_processor = TextProcessor(tokenizer(tmp_path), max_length=16)
    processor = PerturbedProcessor(text_processor, WordDropout(level=0.5, seed=1))
    batch, again = roundtrip(processor, texts)
    assert batch["input_ids"].shape[0] == 2 and torch.equal(batch["input_ids"], again["input_ids"])
    assert batch["attention_mask"].sum() < text_processor.collate(texts)["attention_mask"].sum()

    clips = [clip(seed) for seed in range(2)]
    processor = PerturbedProcessor(WaveformProcessor(16000, 0.5), AudioClipping(level=0.5))
    batch, again = roundtrip(processor, clips)
    assert batch["waveform"].shape == (2, 8000) and batch["lengths"].tolist() == [8000, 8000]
    assert torch.equal(batch["waveform"], again["waveform"])
    assert batch["waveform"].abs().max() <= 0.5 * max(np.abs(c[0]).max() for c in clips) + 1e-6

    processor = PerturbedProcessor(ArrayImageProcessor((28, 28)), ImageOcclusion(level=0.5))
    batch, again = roundtrip(processor, [digit(0), digit(1, channel=True)])
    assert processor.accepts_arrays and batch.shape == (2, 1, 28, 28) and torch.equal(batch, again)

    processor = PerturbedProcessor(FeatureSequenceProcessor(4), TimeStepDropout(level=0.5))
    batch, again = roundtrip(processor, [sequence(0, 10), sequence(1, 7)])
    assert batch["features"].shape == (2, 10, 4) and batch["mask"].sum() == 17
    assert torch.equal(batch["features"], again["features"])


def test_integer_and_tensor_arrays_keep_their_type():
    digits = (digit() * 255).astype(np.uint8)
    out = GaussianImageNoise(level=0.5, array_range=(0, 255))(digits)
    assert out.dtype == np.uint8 and not np.array_equal(out, digits)
    tensor = ImageBlur(level=1.0)(torch.from_numpy(digit(channel=True)))
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (1, 28, 28)


@pytest.mark.parametrize("level", [-0.1, 1.5, float("nan")])
@pytest.mark.parametrize("cls", [GaussianImageNoise, Typos, AudioClipping, TimeStepDropout])
def test_a_level_outside_zero_one_is_refused_naming_the_perturbation(cls, level):
    with pytest.raises(ValueError, match=rf"'{cls.name}'.*level.*{level}"):
        cls(level=level)


def test_negative_scales_are_refused_naming_the_option():
    with pytest.raises(ValueError, match=r"'blur'.*max_sigma"):
        ImageBlur(level=0.5, max_sigma=-1.0)
    with pytest.raises(ValueError, match=r"'additive_noise'.*scale"):
        AudioNoise(level=0.5, scale=-0.1)


def test_a_value_of_the_wrong_kind_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"'typos'.*image"):
        Typos(level=0.5)(rgb_image())
    with pytest.raises(ValueError, match=r"'blur'.*text"):
        ImageBlur(level=0.0)("a caption")  # even at level 0: the set-up is wrong
    with pytest.raises(ValueError, match=r"'time_dropout'.*audio"):
        TimeStepDropout(level=0.5)(clip())
    with pytest.raises(ValueError, match=r"'blur'.*\[784\]"):
        ImageBlur(level=0.5)(digit().reshape(-1))


def test_value_kinds():
    assert value_kind(rgb_image()) == "image"
    assert value_kind("text") == "text"
    assert value_kind(clip()) == "audio"
    assert value_kind(np.zeros(3)) == value_kind(torch.zeros(3)) == "array"
    with pytest.raises(ValueError, match="list"):
        value_kind([1, 2])
    with pytest.raises(ValueError, match="tuple"):
        value_kind((np.zeros(3), True))
    assert GaussianImageNoise(level=0.1).accepts_arrays and not Typos(level=0.1).accepts_arrays


@pytest.mark.parametrize(
    ("perturbation", "modality", "kind"),
    [
        (GaussianImageNoise(level=0.1), "image", "image"),
        (ImageBlur, "image", "array"),
        (functools.partial(ImageOcclusion, seed=1), "image", "image"),
        (Typos, "text", "text"),
        (AudioNoise, "audio", "audio"),
        (AudioClipping, "audio", "array"),
        (TimeStepDropout, "vision", "array"),
        (SequenceGaussianNoise, "text", "array"),
        (SequenceGaussianNoise, "image", "array"),
    ],
)
def test_check_applies_accepts_fitting_modalities(perturbation, modality, kind):
    check_applies(perturbation, modality, kind)


@pytest.mark.parametrize(
    ("perturbation", "modality", "kind"),
    [
        (GaussianImageNoise, "vision", "array"),  # a feature sequence, not an image
        (ImageBlur, "text", "text"),
        (Typos, "text", "array"),
        (WordSwap, "image", "image"),
        (AudioNoise, "text", "array"),
        (TimeStepDropout, "audio", "audio"),
        (functools.partial(SequenceGaussianNoise, scale=2.0), "image", "image"),
    ],
)
def test_check_applies_refuses_naming_the_perturbation_and_modality(perturbation, modality, kind):
    name = getattr(perturbation, "func", perturbation).name
    with pytest.raises(ValueError, match=rf"'{name}'.*'{modality}'"):
        check_applies(perturbation, modality, kind)


def test_hydra_builds_a_perturbation_from_its_target_with_the_level_given_later():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.create(
        {
            "_target_": "mmexp.robustness.perturbations.GaussianImageNoise",
            "_partial_": True,
            "seed": 3,
            "scale": 0.2,
            "array_range": [0, 255],
        }
    )
    build = instantiate(node)
    check_applies(build, "image", "array")
    perturbation = build(level=0.5)
    assert (perturbation.level, perturbation.seed, perturbation.array_range) == (0.5, 3, (0, 255))
    expected = GaussianImageNoise(level=0.5, seed=3, scale=0.2, array_range=(0, 255))(digit())
    assert np.array_equal(perturbation(digit()), expected)
    assert pickle.loads(pickle.dumps(perturbation)).array_range == (0.0, 255.0)
