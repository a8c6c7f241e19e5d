import json
import re
import wave
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmexp.data.audio_io import read_wav, write_wav
from mmexp.data.shapes import TASKS, generate_shapes
from mmexp.data.shapes.attributes import COLOURS, POSITIONS, SHAPES, SIZES, SYNONYMS, Scene
from mmexp.data.shapes.render import (
    AUDIO_BEEPS,
    AUDIO_FREQUENCY_HZ,
    render_audio,
    render_caption,
    render_image,
)
from mmexp.data.shapes.tasks import label_names, sample_scene

SMALL = {"train": 600, "val": 60, "test": 60}
DRAWS = 20000


def read_rows(folder: Path) -> list[dict]:
    with (folder / "manifest.jsonl").open() as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One small data set per task, generated once for the module."""
    root = tmp_path_factory.mktemp("shapes")
    return {task: generate_shapes(root, task, splits=SMALL, seed=7) for task in TASKS}


@pytest.fixture(scope="module")
def draws():
    """Many scenes per task straight from the sampler, for tight statistics.

    Not ``vqa``, whose scenes are two shapes and a question (tests/data/test_shapes_vqa.py).
    """
    out = {}
    for task in (t for t in TASKS if t != "vqa"):
        rng = np.random.default_rng(2024)
        out[task] = [sample_scene(task, rng) for _ in range(DRAWS)]
    return out


def label_rates(pairs, key):
    """Per value of ``key(scene)``: Counter of labels."""
    table = defaultdict(Counter)
    for scene, label in pairs:
        table[key(scene)][label] += 1
    return table


def assert_determines(pairs, key):
    """Every value of ``key(scene)`` co-occurs with exactly one label."""
    for value, counts in label_rates(pairs, key).items():
        assert len(counts) == 1, f"{value} occurs with labels {dict(counts)}"


def assert_independent(pairs, key, num_classes, tol=0.03):
    """The label distribution given each value of ``key(scene)`` is uniform within ``tol``."""
    for value, counts in label_rates(pairs, key).items():
        total = sum(counts.values())
        for label in range(num_classes):
            rate = counts[label] / total
            assert abs(rate - 1 / num_classes) <= tol, (value, label, rate)


def manifest_pairs(folder):
    """``(scene-like attributes, label)`` pairs read back from a generated manifest."""
    return [(row["attributes"], row["label"]) for row in read_rows(folder)]


# ---- generation: files, determinism, cache -------------------------------------------


def test_layout_and_meta(generated):
    folder = generated["synergy"]
    assert re.fullmatch(r"shapes-synergy-[0-9a-f]{10}", folder.name)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["label_names"] == ["mismatch", "match"] and meta["num_classes"] == 2
    assert meta["splits"] == SMALL and meta["seed"] == 7
    assert meta["modalities"] == ["image", "text", "audio"]
    rows = read_rows(folder)
    assert len(rows) == sum(SMALL.values())
    assert [r["split"] for r in rows] == [s for s, n in SMALL.items() for _ in range(n)]
    first = rows[0]
    assert first["id"] == "train-000000" and first["image"] == "images/train-000000.png"
    with Image.open(folder / first["image"]) as image:
        assert image.mode == "RGB" and image.size == (32, 32)
    waveform, rate = read_wav(folder / first["audio"])
    assert rate == 8000 and waveform.shape == (4000,) and np.abs(waveform).max() <= 1
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = generate_shapes(tmp_path / "a", "mixed", splits={"train": 40, "val": 10}, seed=3)
    b = generate_shapes(tmp_path / "b", "mixed", splits={"train": 40, "val": 10}, seed=3)
    assert a.name == b.name
    assert (a / "manifest.jsonl").read_bytes() == (b / "manifest.jsonl").read_bytes()
    for sample_id in ("train-000000", "train-000017", "val-000009"):
        for rel in (f"images/{sample_id}.png", f"audio/{sample_id}.wav"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes()
    c = generate_shapes(tmp_path / "c", "mixed", splits={"train": 40, "val": 10}, seed=4)
    assert c.name != a.name
    assert (a / "manifest.jsonl").read_bytes() != (c / "manifest.jsonl").read_bytes()


def test_resizing_one_split_leaves_other_splits_unchanged(tmp_path):
    small = read_rows(generate_shapes(tmp_path, "redundant", {"train": 20, "val": 10}, seed=1))
    large = read_rows(generate_shapes(tmp_path, "redundant", {"train": 30, "val": 10}, seed=1))
    assert [r for r in small if r["split"] == "val"] == [r for r in large if r["split"] == "val"]
    assert small[:20] == large[:20]  # samples are also stable under growing their own split


def test_second_call_is_served_from_cache(tmp_path):
    first = generate_shapes(tmp_path, "synergy", splits={"train": 20}, seed=5)
    meta = first / "meta.json"
    stamp = meta.stat().st_mtime_ns
    second = generate_shapes(tmp_path, "synergy", splits={"train": 20}, seed=5)
    assert second == first and meta.stat().st_mtime_ns == stamp
    assert len(list(tmp_path.iterdir())) == 1


def test_incomplete_folder_is_regenerated(tmp_path):
    folder = generate_shapes(tmp_path, "synergy", splits={"train": 5}, seed=5)
    (folder / "meta.json").unlink()
    again = generate_shapes(tmp_path, "synergy", splits={"train": 5}, seed=5)
    assert again == folder and (folder / "meta.json").is_file()


def test_unknown_task_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="synergy") as error:
        generate_shapes(tmp_path, "synergistic")
    assert all(name in str(error.value) for name in TASKS)
    with pytest.raises(ValueError, match="unique_text"):
        sample_scene("nope", np.random.default_rng(0))
    with pytest.raises(ValueError, match="redundant"):
        label_names("nope")


def test_invalid_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="split"):
        generate_shapes(tmp_path, "synergy", splits={"train/x": 3})
    with pytest.raises(ValueError, match="non-negative"):
        generate_shapes(tmp_path, "synergy", splits={"train": -1})


# ---- label semantics -----------------------------------------------------------------


def test_label_names():
    assert label_names("redundant") == list(SHAPES)
    assert label_names("synergy") == ["mismatch", "match"]
    assert label_names("mixed") == [
        "small/mismatch",
        "small/match",
        "large/mismatch",
        "large/match",
    ]


def test_synergy_no_single_colour_determines_label_but_the_pair_does(generated, draws):
    pairs = draws["synergy"]
    assert_independent(pairs, lambda s: s.image_colour, 2)
    assert_independent(pairs, lambda s: s.text_colour, 2)
    assert_independent(pairs, lambda s: s.audio_colour, 2)
    assert_determines(pairs, lambda s: (s.image_colour, s.text_colour))
    assert_determines(pairs, lambda s: (s.image_colour, s.audio_colour))
    for scene, label in pairs:
        assert label == int(scene.image_colour == scene.text_colour)
        assert label == int(scene.image_colour == scene.audio_colour)
    rows = manifest_pairs(generated["synergy"])
    assert_determines(rows, lambda a: (a["image"]["colour"], a["text"]["colour"]))
    assert_independent(rows, lambda a: a["image"]["colour"], 2, tol=0.15)
    assert_independent(rows, lambda a: a["text"]["colour"], 2, tol=0.15)


def test_redundant_each_modality_alone_determines_label(generated, draws):
    for pairs, get in (
        (draws["redundant"], lambda s, m: getattr(s, f"{m}_shape")),
        (manifest_pairs(generated["redundant"]), lambda a, m: SHAPES.index(a[m]["shape"])),
    ):
        for modality in ("image", "text", "audio"):
            for scene, label in pairs:
                assert get(scene, modality) == label


@pytest.mark.parametrize("carrier", ["image", "text", "audio"])
def test_unique_only_the_carrier_determines_label(generated, draws, carrier):
    task = f"unique_{carrier}"
    others = [m for m in ("image", "text", "audio") if m != carrier]
    pairs = draws[task]
    assert_determines(pairs, lambda s: getattr(s, f"{carrier}_shape"))
    for scene, label in pairs:
        assert getattr(scene, f"{carrier}_shape") == label
    for modality in others:
        assert_independent(pairs, lambda s, m=modality: getattr(s, f"{m}_shape"), 3)
    for modality in ("image", "text", "audio"):
        assert_independent(pairs, lambda s, m=modality: getattr(s, f"{m}_colour"), 3)
    rows = manifest_pairs(generated[task])
    for attributes, label in rows:
        assert attributes[carrier]["shape"] == SHAPES[label]
    for modality in others:
        assert_independent(rows, lambda a, m=modality: a[m]["shape"], 3, tol=0.12)


def test_mixed_label_is_twice_large_plus_match(generated, draws):
    for scene, label in draws["mixed"]:
        assert label == 2 * scene.size + int(scene.image_colour == scene.text_colour)
    assert_independent(draws["mixed"], lambda s: s.image_colour, 4)
    for attributes, label in manifest_pairs(generated["mixed"]):
        large = attributes["image"]["size"] == "large"
        assert (
            attributes["text"]["size"] == attributes["audio"]["size"] == attributes["image"]["size"]
        )
        match = attributes["image"]["colour"] == attributes["text"]["colour"]
        assert label == 2 * large + match


def test_labels_are_balanced_and_distractor_is_half_the_time(draws):
    for task, pairs in draws.items():
        counts = Counter(label for _, label in pairs)
        k = len(label_names(task))
        assert set(counts) == set(range(k))
        assert all(abs(c / DRAWS - 1 / k) < 0.02 for c in counts.values()), task
        present = sum(s.distractor_shape is not None for s, _ in pairs) / DRAWS
        assert abs(present - 0.5) < 0.02


# ---- rendering -----------------------------------------------------------------------


def scene(**fields):
    base = {
        "image_shape": 1,
        "image_colour": 0,
        "text_shape": 1,
        "text_colour": 0,
        "audio_shape": 1,
        "audio_colour": 0,
        "size": 1,
        "position": 0,
        "distractor_shape": None,
    }
    return Scene(**{**base, **fields})


def saturated_pixels(image):
    pixels = np.asarray(image, dtype=np.int32)
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    ys, xs = np.nonzero(saturation > 0.6 * saturation.max())
    return pixels[ys, xs], ys, xs


@pytest.mark.parametrize("position", range(4))
@pytest.mark.parametrize("size", range(2))
def test_red_shape_is_drawn_red_in_its_quadrant_next_to_a_grey_distractor(position, size):
    rng = np.random.default_rng(position * 2 + size)
    image = render_image(scene(position=position, size=size, distractor_shape=2), 32, rng)
    colours, ys, xs = saturated_pixels(image)
    assert len(colours) >= 4
    assert (colours.argmax(axis=1) == 0).all()  # red channel dominates
    assert (colours[:, 0] - colours[:, 1:].max(axis=1) > 80).all()
    row, col = divmod(position, 2)
    assert ((ys // 16) == row).all() and ((xs // 16) == col).all()
    pixels = np.asarray(image, dtype=np.int32)
    bright_grey = (pixels.min(axis=2) > 110) & (pixels.max(axis=2) - pixels.min(axis=2) < 40)
    assert bright_grey.sum() >= 4  # the distractor is there, and grey


@pytest.mark.parametrize("colour", range(4))
def test_each_colour_has_its_own_dominant_channels(colour):
    image = render_image(scene(image_colour=colour), 32, np.random.default_rng(colour))
    mean = saturated_pixels(image)[0].mean(axis=0)
    if COLOURS[colour] == "yellow":
        assert min(mean[0], mean[1]) - mean[2] > 100
    else:
        assert mean.argmax() == {"red": 0, "green": 1, "blue": 2}[COLOURS[colour]]


def test_large_shapes_cover_more_pixels_than_small():
    areas = []
    for size in range(2):
        colours, _, _ = saturated_pixels(
            render_image(scene(size=size), 32, np.random.default_rng(0))
        )
        areas.append(len(colours))
    assert areas[1] > 2 * areas[0]


def test_caption_names_text_colour_shape_size_and_position():
    rng = np.random.default_rng(0)
    templates = set()
    for _ in range(400):
        s = Scene(
            *(int(rng.integers(n)) for n in (3, 4, 3, 4, 3, 4, 2, 4)),
            distractor_shape=None if rng.random() < 0.5 else int(rng.integers(3)),
        )
        caption = render_caption(s, rng)
        pairs = [
            f"{c} {h}"
            for c in SYNONYMS[COLOURS[s.text_colour]]
            for h in SYNONYMS[SHAPES[s.text_shape]]
        ]
        assert any(pair in caption for pair in pairs), caption
        assert any(re.search(rf"\b{w}\b", caption) for w in SYNONYMS[SIZES[s.size]]), caption
        assert POSITIONS[s.position] in caption
        assert ("grey" in caption) == (s.distractor_shape is not None)
        if s.distractor_shape is not None:
            assert any(f"grey {w}" in caption for w in SYNONYMS[SHAPES[s.distractor_shape]])
        templates.add(re.sub(r"\b(top|bottom) (left|right)\b", "P", caption).split()[0])
    assert len(templates) >= 5


def count_beeps(waveform, sample_rate):
    window = int(0.01 * sample_rate)
    envelope = np.convolve(np.abs(waveform), np.ones(window) / window, mode="same")
    above = envelope > 0.4 * envelope.max()
    return int(np.sum(above[1:] & ~above[:-1]) + above[0])


@pytest.mark.parametrize("shape", range(3))
@pytest.mark.parametrize("colour", range(4))
def test_audio_pitch_encodes_colour_and_beeps_encode_shape(shape, colour):
    rate = 8000
    for size in range(2):
        rng = np.random.default_rng(10 * shape + colour + size)
        audio = render_audio(
            scene(audio_shape=shape, audio_colour=colour, size=size), rate, 0.5, rng
        )
        assert audio.dtype == np.float32 and audio.shape == (4000,)
        assert np.abs(audio).max() <= 1.0
        spectrum = np.abs(np.fft.rfft(audio))
        peak = np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()]
        assert abs(peak - AUDIO_FREQUENCY_HZ[COLOURS[colour]]) <= 10
        assert count_beeps(audio, rate) == AUDIO_BEEPS[SHAPES[shape]] == shape + 1


def test_audio_loudness_encodes_size():
    peaks = [
        np.abs(render_audio(scene(size=s), 8000, 0.5, np.random.default_rng(0))).max()
        for s in range(2)
    ]
    assert 0.2 < peaks[0] < 0.32 and 0.75 < peaks[1] <= 0.9


# ---- WAV I/O -------------------------------------------------------------------------


def test_wav_round_trip_is_within_one_quantisation_step(tmp_path):
    rng = np.random.default_rng(0)
    waveform = np.concatenate([[-1.0, 1.0, 0.0], rng.uniform(-1, 1, 5000)]).astype(np.float32)
    write_wav(tmp_path / "x.wav", waveform, 16000)
    back, rate = read_wav(tmp_path / "x.wav")
    assert rate == 16000 and back.dtype == np.float32 and back.shape == waveform.shape
    assert np.abs(back - waveform).max() <= 1 / 32768


def write_raw(path, frames, width, channels, rate=8000):
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(frames)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_wav_other_widths_and_stereo_average(tmp_path, width):
    values = np.array([0.5, -0.5, 0.25, 0.75])  # interleaved L, R, L, R
    if width == 1:
        frames = np.rint(values * 128 + 128).astype("u1").tobytes()
    elif width == 3:
        ints = np.rint(values * 2**23).astype("<i4")
        frames = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        frames = np.rint(values * 2.0 ** (8 * width - 1)).astype(f"<i{width}").tobytes()
    write_raw(tmp_path / "s.wav", frames, width, channels=2, rate=22050)
    back, rate = read_wav(tmp_path / "s.wav")
    assert rate == 22050
    np.testing.assert_allclose(back, [0.0, 0.5], atol=1 / 64)


def test_read_wav_names_unreadable_files(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not a wave file")
    with pytest.raises(ValueError, match="broken.wav"):
        read_wav(bad)
    with pytest.raises(ValueError, match="missing.wav"):
        read_wav(tmp_path / "missing.wav")
