"""The vocabulary of the ``shapes`` data set and the per-modality description of one sample.

Every attribute is stored as an index into one of the tuples below, so that a task can make
the image, the caption and the audio clip disagree on purpose (that disagreement is what the
tasks in :mod:`mmexp.data.shapes.tasks` use to control which modality carries the label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")

# Saturated fill colours, far apart in RGB so the colour is readable at 32x32 pixels.
# Yellow keeps a clearly lower blue channel than green/red to stay distinct from grey.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
}

# The distractor colour. Grey is never a label colour, so "the coloured object" is always
# unambiguous: the distractor can only ever be a nuisance, never a shortcut.
GREY_RGB: tuple[int, int, int] = (150, 150, 150)

# Caption words. Several per attribute so that a text model has to learn word meanings
# rather than memorise one token per class. No word is shared between two classes.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "three-sided shape"),
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "navy", "azure"),
    "yellow": ("yellow", "golden", "lemon"),
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
}


def _check_index(name: str, value: int, vocabulary: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` indexes ``vocabulary``."""
    # bool is an int subclass; a stray True/False is almost certainly a bug upstream.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"Scene.{name} must be an int index, got {value!r}")
    if not 0 <= value < len(vocabulary):
        raise ValueError(
            f"Scene.{name}={value} is out of range; valid indices 0..{len(vocabulary) - 1} "
            f"for {list(vocabulary)}"
        )


@dataclass(frozen=True)
class Scene:
    """What each modality of one sample shows, as indices into the vocabularies.

    Shape and colour are stored per modality because tasks decouple them; size and position
    are shared by all modalities that can express them (audio has no position).

    Attributes:
        image_shape: Index into :data:`SHAPES` of the coloured shape drawn in the image.
        image_colour: Index into :data:`COLOURS` of that shape's fill.
        text_shape: Index into :data:`SHAPES` named by the caption.
        text_colour: Index into :data:`COLOURS` named by the caption.
        audio_shape: Index into :data:`SHAPES` encoded by the audio rhythm.
        audio_colour: Index into :data:`COLOURS` encoded by the audio pitch.
        size: Index into :data:`SIZES`: drawn size, caption adjective and audio loudness.
        position: Index into :data:`POSITIONS`: quadrant of the image and caption phrase.
        distractor_shape: Index into :data:`SHAPES` of a second, grey shape drawn in the image
            and mentioned in the caption, or ``None`` for no distractor.
    """

    image_shape: int
    image_colour: int
    text_shape: int
    text_colour: int
    audio_shape: int
    audio_colour: int
    size: int
    position: int
    distractor_shape: int | None = None

    def __post_init__(self) -> None:
        for name in ("image_shape", "text_shape", "audio_shape"):
            _check_index(name, getattr(self, name), SHAPES)
        for name in ("image_colour", "text_colour", "audio_colour"):
            _check_index(name, getattr(self, name), COLOURS)
        _check_index("size", self.size, SIZES)
        _check_index("position", self.position, POSITIONS)
        if self.distractor_shape is not None:
            _check_index("distractor_shape", self.distractor_shape, SHAPES)

    def readable(self) -> dict[str, dict[str, Any]]:
        """Attribute names per modality, as written to the ``attributes`` manifest column.

        Returns:
            ``{"image": {...}, "text": {...}, "audio": {...}}`` with class names (not indices),
            so a manifest can be inspected or re-labelled without this module.
        """
        distractor = None if self.distractor_shape is None else SHAPES[self.distractor_shape]
        size, position = SIZES[self.size], POSITIONS[self.position]
        return {
            "image": {
                "shape": SHAPES[self.image_shape],
                "colour": COLOURS[self.image_colour],
                "size": size,
                "position": position,
                "distractor": distractor,
            },
            "text": {
                "shape": SHAPES[self.text_shape],
                "colour": COLOURS[self.text_colour],
                "size": size,
                "position": position,
                "distractor": distractor,
            },
            "audio": {
                "shape": SHAPES[self.audio_shape],
                "colour": COLOURS[self.audio_colour],
                "size": size,
            },
        }
