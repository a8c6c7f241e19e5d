"""The ``vqa`` shapes task: a question about one of two shapes, answered from the image.

Each image shows two coloured shapes that differ in every attribute: shape, colour, size
(one small, one large) and quadrant. The text is a question that names one of them by its
colour, shape or size ("the red one", "the square", "the small one") and asks about another
attribute: its colour, shape, size or position (answer type ``other``), how many corners it
has (``number``: circle 0, triangle 3, square 4), or whether it has a given
attribute value (``yes/no``; yes and no equally often, a "no" value drawn among all values
the object lacks). The six question types are equally likely, the target object is either
shape with equal probability, and each question type has three templates and the shapes'
synonyms, so wording is no cue.

Neither modality answers alone, and decision-level fusion cannot combine them:

* image only (the model cannot tell which attribute of which object is asked): every
  answer has probability at most 1/12 given the image (1/6 for the question type, 1/2 for
  the object; yes and no 1/12 each), so its best accuracy is **1/12 = 0.083**;
* question only (the question type, the naming value and the value to verify are known,
  the image's attributes are not): the asked attribute is uniform over its values, so its
  best accuracy is the mean of 1/4 (colour), 1/3 (shape), 1/2 (size), 1/4 (position), 1/3
  (corners) and 1/2 (yes/no): **13/36 = 0.361**;
* late fusion (a sum of per-modality answer scores): the question fixes the answer type
  but not which of the two objects' values it is, and the image scores both alike, so it
  picks one of two: **0.5** (yes/no is an equality test that no sum of scores computes).

A model that relates the words to the image answers every question (1.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mmexp.data.shapes.attributes import (
    COLOUR_RGB,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    SYNONYMS,
    Scene,
)
from mmexp.data.shapes.render import blank_canvas, finish_image, place_shape, render_audio
from mmexp.metrics.vqa_answers import ANSWER_TYPES

#: The attributes a question can name an object by or ask about, with their values.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": COLOURS,
    "shape": SHAPES,
    "size": SIZES,
    "position": POSITIONS,
}
# Shape sides as fractions of the quadrant: larger than the other tasks' (0.30 / 0.55), so
# that both shapes of a 32-pixel image show their form, still two sizes far apart.
SIZE_FRACTION: dict[str, float] = {"small": 0.45, "large": 0.85}
# What a question names its shape by: the attributes each shape shows where it is drawn (a
# quadrant is a place in the image, not a local feature of the shape).
REFERRED_BY: tuple[str, ...] = ("colour", "shape", "size")
CORNERS: dict[str, str] = {"circle": "0", "triangle": "3", "square": "4"}
QUESTION_TYPES: tuple[str, ...] = ("colour", "shape", "size", "position", "corners", "verify")
ANSWER_TYPE: dict[str, str] = {
    **{name: "other" for name in ATTRIBUTES},
    "corners": "number",
    "verify": "yes/no",
}
#: Every answer, in label-index order.
ANSWERS: tuple[str, ...] = (
    *COLOURS,
    *SHAPES,
    *SIZES,
    *POSITIONS,
    *sorted(set(CORNERS.values())),
    "yes",
    "no",
)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": (
        "what colour is {ref}?",
        "which colour does {ref} have?",
        "what is the colour of {ref}?",
    ),
    "shape": ("what shape is {ref}?", "what kind of shape is {ref}?", "which shape is {ref}?"),
    "size": ("how big is {ref}?", "what size is {ref}?", "what is the size of {ref}?"),
    "position": ("where is {ref}?", "which corner is {ref} in?", "in which corner is {ref}?"),
    "corners": (
        "how many corners does {ref} have?",
        "how many corners has {ref} got?",
        "what number of corners does {ref} have?",
    ),
}
VERIFY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": ("is {ref} {value}?", "is {ref} coloured {value}?", "does {ref} look {value}?"),
    "shape": (
        "is {ref} a {value}?",
        "is {ref} shaped like a {value}?",
        "is {ref} drawn as a {value}?",
    ),
    "size": ("is {ref} {value}?", "is {ref} a {value} one?", "does {ref} look {value}?"),
    "position": (
        "is {ref} in the {value}?",
        "is {ref} at the {value}?",
        "is {ref} placed in the {value}?",
    ),
}
REFERENCES: dict[str, tuple[str, ...]] = {
    "colour": ("the {value} shape", "the {value} one", "the {value} object"),
    "shape": ("the {value}",),
    "size": ("the {value} shape", "the {value} one", "the {value} object"),
}


@dataclass(frozen=True)
class ShapeObject:
    """One coloured shape: indices into the attribute vocabularies."""

    shape: int
    colour: int
    size: int
    position: int

    def value(self, attribute: str) -> int:
        """The index of this object's value of ``attribute``."""
        return getattr(self, attribute)

    def readable(self) -> dict[str, str]:
        """Attribute names (not indices)."""
        return {name: values[self.value(name)] for name, values in ATTRIBUTES.items()}


@dataclass(frozen=True)
class QuestionScene:
    """Two shapes and a question about one of them.

    Attributes:
        objects: The two shapes, in drawing order.
        target: Index into ``objects`` of the shape the question is about.
        question_type: One of :data:`QUESTION_TYPES`.
        refer_by: The attribute the question names the target by.
        asked: The attribute asked about (``shape`` for ``corners``), or verified.
        verified: For ``verify``: the index of the value asked about, else ``None``.
    """

    objects: tuple[ShapeObject, ShapeObject]
    target: int
    question_type: str
    refer_by: str
    asked: str
    verified: int | None = None

    @property
    def answer(self) -> str:
        """The answer, one of :data:`ANSWERS`."""
        target = self.objects[self.target]
        if self.question_type == "verify":
            return "yes" if target.value(self.asked) == self.verified else "no"
        if self.question_type == "corners":
            return CORNERS[SHAPES[target.shape]]
        return ATTRIBUTES[self.asked][target.value(self.asked)]

    @property
    def answer_type(self) -> str:
        """``yes/no``, ``number`` or ``other``, as VQA's annotations name them."""
        return ANSWER_TYPE[self.question_type]

    def readable(self) -> dict[str, dict[str, Any]]:
        """What each modality shows, for the ``attributes`` manifest column."""
        first = self.objects[0].readable()
        named = self.objects[self.target].value(self.refer_by)
        return {
            "image": {"objects": [o.readable() for o in self.objects]},
            "text": {
                "question_type": self.question_type,
                "refer_by": {self.refer_by: ATTRIBUTES[self.refer_by][named]},
                "asked": self.asked,
                "verified": None
                if self.verified is None
                else ATTRIBUTES[self.asked][self.verified],
            },
            "audio": {"shape": first["shape"], "colour": first["colour"], "size": first["size"]},
        }


def _pick(rng: np.random.Generator, options: tuple[Any, ...] | list[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _two_different(rng: np.random.Generator, count: int) -> tuple[int, int]:
    first, second = rng.choice(count, size=2, replace=False)
    return int(first), int(second)


def sample_question(rng: np.random.Generator) -> tuple[QuestionScene, int]:
    """Draw two shapes, a target and a question about it; the label indexes :data:`ANSWERS`."""
    shapes = _two_different(rng, len(SHAPES))
    colours = _two_different(rng, len(COLOURS))
    sizes = _two_different(rng, len(SIZES))
    positions = _two_different(rng, len(POSITIONS))
    objects = tuple(ShapeObject(shapes[i], colours[i], sizes[i], positions[i]) for i in (0, 1))
    target = int(rng.integers(2))
    question_type = _pick(rng, QUESTION_TYPES)
    if question_type == "verify":
        asked = _pick(rng, tuple(ATTRIBUTES))
    else:
        asked = "shape" if question_type == "corners" else question_type
    refer_by = _pick(rng, [name for name in REFERRED_BY if name != asked])
    verified = None
    if question_type == "verify":
        own = objects[target].value(asked)
        if rng.random() < 0.5:
            verified = own
        else:
            verified = _pick(rng, [v for v in range(len(ATTRIBUTES[asked])) if v != own])
    scene = QuestionScene(objects, target, question_type, refer_by, asked, verified)  # type: ignore[arg-type]
    return scene, ANSWERS.index(scene.answer)


def _words(attribute: str, value: int, rng: np.random.Generator) -> str:
    name = ATTRIBUTES[attribute][value]
    # Positions have one wording; the other attributes a synonym each time.
    return _pick(rng, SYNONYMS[name]) if name in SYNONYMS else name


def render_question(scene: QuestionScene, rng: np.random.Generator) -> str:
    """The question, one lower-case sentence; template and synonyms drawn from ``rng``."""
    target = scene.objects[scene.target]
    named = _words(scene.refer_by, target.value(scene.refer_by), rng)
    reference = _pick(rng, REFERENCES[scene.refer_by]).format(value=named)
    if scene.question_type == "verify":
        assert scene.verified is not None
        value = _words(scene.asked, scene.verified, rng)
        return _pick(rng, VERIFY_TEMPLATES[scene.asked]).format(ref=reference, value=value)
    return _pick(rng, TEMPLATES[scene.question_type]).format(ref=reference)


def render_question_image(
    scene: QuestionScene, size_px: int, rng: np.random.Generator
) -> Image.Image:
    """Both shapes in their quadrants, on the background and noise of every shapes image."""
    image, draw = blank_canvas(size_px, rng)
    for shape in scene.objects:
        fill = COLOUR_RGB[COLOURS[shape.colour]]
        place_shape(
            draw,
            SHAPES[shape.shape],
            SIZES[shape.size],
            shape.position,
            fill,
            image.width,
            rng,
            SIZE_FRACTION,
        )
    return finish_image(image, size_px, rng)


def render_question_audio(
    scene: QuestionScene, sample_rate: int, duration_s: float, rng: np.random.Generator
) -> np.ndarray:
    """The tone of the first shape (the task is image + question; audio is no part of it)."""
    first = scene.objects[0]
    tone = Scene(
        image_shape=first.shape,
        image_colour=first.colour,
        text_shape=first.shape,
        text_colour=first.colour,
        audio_shape=first.shape,
        audio_colour=first.colour,
        size=first.size,
        position=first.position,
    )
    return render_audio(tone, sample_rate, duration_s, rng)


def question_columns(scene: QuestionScene) -> dict[str, str]:
    """The manifest columns of a question besides the shared ones."""
    return {"answer_type": scene.answer_type, "question_type": scene.question_type}


#: Manifest columns batches carry as indices (the VQA metric scores each answer type).
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {"answer_type": ANSWER_TYPES}
