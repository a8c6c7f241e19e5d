"""Turn a :class:`Scene` into an image, a caption and an audio clip, plus WAV file I/O.

Each renderer reads only its own modality's fields of the scene, so a task controls what
each modality "knows" purely through the scene. Nuisance variation (noise, jitter, wording,
onset) comes from the ``rng`` argument so that a fixed seed reproduces the exact bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw

from mmexp.data.shapes.attributes import (
    COLOUR_RGB,
    COLOURS,
    GREY_RGB,
    POSITIONS,
    SHAPES,
    SIZES,
    SYNONYMS,
    Scene,
)

# Shape side as a fraction of the quadrant side, per size class.
SIZE_FRACTION: dict[str, float] = {"small": 0.30, "large": 0.55}
# Shapes are drawn this many times larger and box-downsampled: PIL draws without
# anti-aliasing, and a 5-pixel triangle is only recognisable with smooth edges.
SUPERSAMPLE = 4
MAX_JITTER_PX = 2

# Audio code: colour -> pitch, shape -> rhythm (number of beeps), size -> loudness.
AUDIO_FREQUENCY_HZ: dict[str, float] = {
    "red": 440.0,
    "green": 587.0,
    "blue": 740.0,
    "yellow": 880.0,
}
AUDIO_BEEPS: dict[str, int] = {"circle": 1, "square": 2, "triangle": 3}
AUDIO_AMPLITUDE: dict[str, float] = {"small": 0.25, "large": 0.8}
AUDIO_NOISE_STD = 0.01
MAX_ONSET_JITTER_S = 0.008

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {shape} in the {position}{extra}",
    "there is a {size} {colour} {shape} at the {position}{extra}",
    "{position}: one {size} {colour} {shape}{extra}",
    "the {position} corner holds a {size} {colour} {shape}{extra}",
    "you can see a {size} {colour} {shape} in the {position} corner{extra}",
    "{size} {colour} {shape}, {position}{extra}",
)


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _quadrant_origin(position: int, quadrant: float) -> tuple[float, float]:
    """Top-left corner ``(x, y)`` of quadrant ``position`` (order of :data:`POSITIONS`)."""
    row, col = divmod(position, 2)
    return col * quadrant, row * quadrant


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    side: float,
    fill: tuple[int, int, int],
) -> None:
    """Draw ``shape`` with bounding square of ``side`` centred at ``centre``."""
    cx, cy = centre
    half = side / 2
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    else:  # pragma: no cover - Scene validation makes this unreachable
        raise ValueError(f"unknown shape {shape!r}")


def place_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    size: str,
    position: int,
    fill: tuple[int, int, int],
    canvas: int,
    rng: np.random.Generator,
    fractions: Mapping[str, float] = SIZE_FRACTION,
) -> None:
    """Draw one shape in its quadrant with a small random offset from the quadrant centre.

    ``fractions``: the side per size class, as a fraction of the quadrant side.
    """
    quadrant = canvas / 2
    side = fractions[size] * quadrant
    # Jitter a few output pixels, but never so much that the shape leaves its quadrant.
    slack = (quadrant - side) / 2
    limit = min(MAX_JITTER_PX * SUPERSAMPLE, slack)
    dx, dy = rng.uniform(-limit, limit, size=2)
    x0, y0 = _quadrant_origin(position, quadrant)
    _draw_shape(draw, shape, (x0 + quadrant / 2 + dx, y0 + quadrant / 2 + dy), side, fill)


def blank_canvas(size_px: int, rng: np.random.Generator) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """The supersampled background every shapes image is drawn on, and a pen for it."""
    canvas = size_px * SUPERSAMPLE
    # A random dark grey level per image, so brightness is not a constant cue.
    level = int(rng.integers(30, 60))
    image = Image.new("RGB", (canvas, canvas), (level, level, level))
    return image, ImageDraw.Draw(image)


def finish_image(image: Image.Image, size_px: int, rng: np.random.Generator) -> Image.Image:
    """Downsample a drawn canvas to ``size_px`` and add the pixel noise."""
    small = np.asarray(image.resize((size_px, size_px), Image.Resampling.BOX), dtype=np.float32)
    # Grey (channel-shared) noise keeps the background unsaturated; a weaker per-channel
    # noise on top makes sure no pixel value is exactly predictable.
    grey_noise = rng.normal(0.0, 6.0, size=(size_px, size_px, 1))
    colour_noise = rng.normal(0.0, 2.0, size=(size_px, size_px, 3))
    pixels = np.clip(np.rint(small + grey_noise + colour_noise), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def render_image(scene: Scene, size_px: int, rng: np.random.Generator) -> Image.Image:
    """Draw the image modality of ``scene``.

    Args:
        scene: Uses ``image_shape``, ``image_colour``, ``size``, ``position`` and
            ``distractor_shape``.
        size_px: Side of the square output image in pixels.
        rng: Source of the background level, noise, jitter and distractor placement.

    Returns:
        An RGB image: a dark noisy grey background, the coloured shape in its quadrant and,
        if the scene has one, a grey distractor shape of random size in another quadrant.
    """
    image, draw = blank_canvas(size_px, rng)
    canvas = image.width
    place_shape(
        draw,
        SHAPES[scene.image_shape],
        SIZES[scene.size],
        scene.position,
        COLOUR_RGB[COLOURS[scene.image_colour]],
        canvas,
        rng,
    )
    if scene.distractor_shape is not None:
        others = [p for p in range(len(POSITIONS)) if p != scene.position]
        where = others[int(rng.integers(len(others)))]
        place_shape(
            draw, SHAPES[scene.distractor_shape], _choice(rng, SIZES), where, GREY_RGB, canvas, rng
        )
    return finish_image(image, size_px, rng)


def render_caption(scene: Scene, rng: np.random.Generator) -> str:
    """Describe the text modality of ``scene`` in one lower-case sentence.

    The template and one synonym per word are drawn from ``rng``. The caption always names
    ``text_colour`` immediately followed by ``text_shape`` (e.g. "crimson box"), the size and
    the position, and ends with "next to a grey <shape>" when there is a distractor.

    Args:
        scene: Uses ``text_shape``, ``text_colour``, ``size``, ``position`` and
            ``distractor_shape``.
        rng: Source of the template and synonym choices.

    Returns:
        The caption.
    """
    template = _choice(rng, CAPTION_TEMPLATES)
    words = {
        "size": _choice(rng, SYNONYMS[SIZES[scene.size]]),
        "colour": _choice(rng, SYNONYMS[COLOURS[scene.text_colour]]),
        "shape": _choice(rng, SYNONYMS[SHAPES[scene.text_shape]]),
        "position": POSITIONS[scene.position],
        "extra": "",
    }
    if scene.distractor_shape is not None:
        words["extra"] = " next to a grey " + _choice(rng, SYNONYMS[SHAPES[scene.distractor_shape]])
    return template.format(**words)


def caption_words() -> list[str]:
    """Every word a shapes caption can hold, in a fixed order: the captioning vocabulary.

    The templates' own words, every synonym and position, and the distractor's phrase, split
    as :func:`mmexp.decoders.tokenizers.word_tokenizer` splits text.
    """
    texts = [
        *(re.sub(r"\{\w+\}", " ", template) for template in CAPTION_TEMPLATES),
        *(word for options in SYNONYMS.values() for word in options),
        *POSITIONS,
        " next to a grey ",
    ]
    words = (re.sub(r"([,.:;!?])", r" \1 ", text).split() for text in texts)
    return list(dict.fromkeys(word for split in words for word in split))


def caption_tokenizer():  # noqa: ANN201 - a transformers tokenizer, imported lazily
    """The word-level tokenizer over :func:`caption_words` (``data.caption_tokenizer``)."""
    from mmexp.decoders.tokenizers import word_tokenizer

    return word_tokenizer(caption_words())


def beep_schedule(shape: str, active_s: float) -> list[tuple[float, float]]:
    """``(start, length)`` in seconds of each beep within an active window of ``active_s``.

    One beep fills the window; several beeps are separated by gaps of 20% of the window,
    long enough that the beeps stay distinct after any reasonable envelope smoothing.
    """
    count = AUDIO_BEEPS[shape]
    gap = 0.2 * active_s if count > 1 else 0.0
    length = (active_s - (count - 1) * gap) / count
    return [(i * (length + gap), length) for i in range(count)]


def render_audio(
    scene: Scene, sample_rate: int, duration_s: float, rng: np.random.Generator
) -> np.ndarray:
    """Synthesise the audio modality of ``scene``.

    Args:
        scene: Uses ``audio_colour`` (pitch), ``audio_shape`` (number of beeps) and ``size``
            (loudness).
        sample_rate: Samples per second.
        duration_s: Clip length in seconds.
        rng: Source of the phase, the onset jitter and the background noise.

    Returns:
        Mono waveform, float32 in ``[-1, 1]``, of ``round(sample_rate * duration_s)`` samples.
    """
    count = int(round(sample_rate * duration_s))
    t = np.arange(count) / sample_rate
    frequency = AUDIO_FREQUENCY_HZ[COLOURS[scene.audio_colour]]
    amplitude = AUDIO_AMPLITUDE[SIZES[scene.size]]
    phase = rng.uniform(0.0, 2 * np.pi)
    onset = 0.05 * duration_s + rng.uniform(0.0, MAX_ONSET_JITTER_S)
    envelope = np.zeros(count)
    for start, length in beep_schedule(SHAPES[scene.audio_shape], 0.8 * duration_s):
        # Raised-cosine ramps avoid clicks, which would smear energy across the spectrum.
        ramp = min(0.005, length / 4)
        local = t - (onset + start)
        rise = np.clip(local / ramp, 0.0, 1.0)
        fall = np.clip((length - local) / ramp, 0.0, 1.0)
        envelope += 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))
    tone = amplitude * envelope * np.sin(2 * np.pi * frequency * t + phase)
    noisy = tone + rng.normal(0.0, AUDIO_NOISE_STD, size=count)
    return np.clip(noisy, -1.0, 1.0).astype(np.float32)
