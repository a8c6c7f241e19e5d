"""Label definitions of the ``shapes`` tasks, one per kind of multimodal interaction.

The tasks follow the partial-information-decomposition (PID) taxonomy:

* ``redundant``: every modality carries the label; any one of them suffices.
* ``unique_image`` / ``unique_text`` / ``unique_audio``: only one modality carries it.
* ``synergy``: no single modality carries any information about the label, the pair
  (image, caption) determines it.
* ``mixed``: one redundant bit (size, in every modality) and one synergistic bit (caption
  colour matches image colour), so a model has to combine both kinds of evidence.
* ``vqa``: the text is a question about one of two shapes in the image, the label its
  answer (:mod:`mmexp.data.shapes.questions`); neither modality answers alone.

Each sampler draws the label first and then builds a :class:`Scene` consistent with it, so
the label distribution is uniform and the independence claims hold by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from mmexp.data.shapes import questions
from mmexp.data.shapes.attributes import COLOURS, POSITIONS, SHAPES, SIZES, Scene
from mmexp.data.shapes.render import render_audio, render_caption, render_image

# Probability that a grey distractor shape is drawn (and mentioned in the caption).
DISTRACTOR_PROBABILITY = 0.5


@dataclass(frozen=True)
class TaskSpec:
    """One label definition.

    Attributes:
        name: Task name, the key in :data:`TASKS`.
        label_names: Class names; the label is an index into this tuple.
        description: One line saying which modality (combination) carries the label.
        sampler: ``rng -> (scene, label)``.
        image: ``(scene, size_px, rng) -> image``; the scene is what ``sampler`` draws.
        text: ``(scene, rng) -> text``: a caption, or the question of ``vqa``.
        audio: ``(scene, sample_rate, duration_s, rng) -> waveform``.
        columns: ``scene -> {column: value}``: manifest columns of the task's own
            (``vqa``: ``answer_type``, ``question_type``).
        index_columns: Columns that batches carry as indices into the given names
            (``vqa``: ``answer_type``), see ``ManifestDataModule``.
        image_captions: Whether rows hold ``captions``, five captions of the image's one
            shape (the references of ``objective=caption``); ``vqa`` draws two shapes.
    """

    name: str
    label_names: tuple[str, ...]
    description: str
    sampler: Callable[[np.random.Generator], tuple[Any, int]]
    image: Callable[[Any, int, np.random.Generator], Image.Image] = render_image
    text: Callable[[Any, np.random.Generator], str] = render_caption
    audio: Callable[[Any, int, float, np.random.Generator], np.ndarray] = render_audio
    columns: Callable[[Any], dict[str, Any]] = lambda scene: {}
    index_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    image_captions: bool = True

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.label_names)


def _index(rng: np.random.Generator, vocabulary: tuple[str, ...]) -> int:
    """A uniformly random index into ``vocabulary`` as a plain ``int``."""
    return int(rng.integers(len(vocabulary)))


def _distractor(rng: np.random.Generator) -> int | None:
    """A random distractor shape with probability :data:`DISTRACTOR_PROBABILITY`, else None."""
    return _index(rng, SHAPES) if rng.random() < DISTRACTOR_PROBABILITY else None


def _caption_colour(rng: np.random.Generator, image_colour: int, match: bool) -> int:
    """The caption colour: equal to ``image_colour`` if ``match``, else one of the others.

    With ``match`` a fair coin and ``image_colour`` uniform, the result is uniform and
    independent of ``match``: P(caption=c | match) = 1/4 = P(caption=c | mismatch). That is
    what keeps each modality alone at chance on the synergy bit.
    """
    if match:
        return image_colour
    others = [c for c in range(len(COLOURS)) if c != image_colour]
    return others[int(rng.integers(len(others)))]


def _sample_redundant(rng: np.random.Generator) -> tuple[Scene, int]:
    label = _index(rng, SHAPES)
    colour = _index(rng, COLOURS)
    scene = Scene(
        image_shape=label,
        image_colour=colour,
        text_shape=label,
        text_colour=colour,
        audio_shape=label,
        audio_colour=colour,
        size=_index(rng, SIZES),
        position=_index(rng, POSITIONS),
        distractor_shape=_distractor(rng),
    )
    return scene, label


def _unique_sampler(modality: str) -> Callable[[np.random.Generator], tuple[Scene, int]]:
    """Sampler where only ``modality``'s shape equals the label; everything else is noise."""

    def sample(rng: np.random.Generator) -> tuple[Scene, int]:
        label = _index(rng, SHAPES)
        # Draw all three shapes independently, then overwrite the carrier: the draw order is
        # the same for all three unique tasks, so they differ only in which field is the label.
        shapes = {name: _index(rng, SHAPES) for name in ("image", "text", "audio")}
        shapes[modality] = label
        scene = Scene(
            image_shape=shapes["image"],
            image_colour=_index(rng, COLOURS),
            text_shape=shapes["text"],
            text_colour=_index(rng, COLOURS),
            audio_shape=shapes["audio"],
            audio_colour=_index(rng, COLOURS),
            size=_index(rng, SIZES),
            position=_index(rng, POSITIONS),
            distractor_shape=_distractor(rng),
        )
        return scene, label

    return sample


def _sample_synergy(rng: np.random.Generator) -> tuple[Scene, int]:
    label = int(rng.integers(2))
    image_colour = _index(rng, COLOURS)
    text_colour = _caption_colour(rng, image_colour, match=bool(label))
    # The tone follows the same rule on its own draw, so image+audio is a synergy pair too
    # (image+text and image+audio each determine the label; no modality alone does).
    audio_colour = _caption_colour(rng, image_colour, match=bool(label))
    shape = _index(rng, SHAPES)
    scene = Scene(
        image_shape=shape,
        image_colour=image_colour,
        text_shape=shape,
        text_colour=text_colour,
        audio_shape=_index(rng, SHAPES),
        audio_colour=audio_colour,
        size=_index(rng, SIZES),
        position=_index(rng, POSITIONS),
        distractor_shape=_distractor(rng),
    )
    return scene, label


def _sample_mixed(rng: np.random.Generator) -> tuple[Scene, int]:
    large = int(rng.integers(2))
    match = int(rng.integers(2))
    image_colour = _index(rng, COLOURS)
    text_colour = _caption_colour(rng, image_colour, match=bool(match))
    shape = _index(rng, SHAPES)
    scene = Scene(
        image_shape=shape,
        image_colour=image_colour,
        text_shape=shape,
        text_colour=text_colour,
        audio_shape=_index(rng, SHAPES),
        audio_colour=_index(rng, COLOURS),
        size=large,
        position=_index(rng, POSITIONS),
        distractor_shape=_distractor(rng),
    )
    return scene, 2 * large + match


TASKS: dict[str, TaskSpec] = {
    "redundant": TaskSpec(
        "redundant",
        SHAPES,
        "label = shape, shown identically by image, caption and audio (redundancy)",
        _sample_redundant,
    ),
    **{
        f"unique_{modality}": TaskSpec(
            f"unique_{modality}",
            SHAPES,
            f"label = shape shown by the {modality} only; the others are random (uniqueness)",
            _unique_sampler(modality),
        )
        for modality in ("image", "text", "audio")
    },
    "synergy": TaskSpec(
        "synergy",
        ("mismatch", "match"),
        "label = caption colour (and audio tone colour) equals image colour; each modality "
        "alone is at chance (synergy)",
        _sample_synergy,
    ),
    "mixed": TaskSpec(
        "mixed",
        tuple(f"{size}/{match}" for size in SIZES for match in ("mismatch", "match")),
        "label = 2 * (size is large, redundant) + (caption colour matches image, synergy)",
        _sample_mixed,
    ),
    "vqa": TaskSpec(
        "vqa",
        questions.ANSWERS,
        "label = the answer to the question (text) about one of the two shapes (image); "
        "neither modality alone answers it",
        questions.sample_question,
        image=questions.render_question_image,
        text=questions.render_question,
        audio=questions.render_question_audio,
        columns=questions.question_columns,
        index_columns=questions.INDEX_COLUMNS,
        image_captions=False,
    ),
}


def get_task(task: str) -> TaskSpec:
    """Look up a task by name.

    Raises:
        ValueError: ``task`` is not a key of :data:`TASKS`; the message lists the valid names.
    """
    try:
        return TASKS[task]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown shapes task {task!r}; valid tasks: {', '.join(sorted(TASKS))}"
        ) from None


def sample_scene(task: str, rng: np.random.Generator) -> tuple[Scene, int]:
    """Draw one scene and its label for ``task``.

    Args:
        task: A key of :data:`TASKS`.
        rng: Source of randomness; the result is a deterministic function of its state.

    Returns:
        ``(scene, label)`` with ``label`` an index into :func:`label_names`.

    Raises:
        ValueError: Unknown task.
    """
    return get_task(task).sampler(rng)


def label_names(task: str) -> list[str]:
    """Class names of ``task``, in label-index order.

    Raises:
        ValueError: Unknown task.
    """
    return list(get_task(task).label_names)
