"""A few VQA v2 questions written in the release's JSON schema, with tiny COCO JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

# The colour each fixture image is painted; "what colour is it?" is answered from the image.
PAINT = {"red": (200, 30, 30), "blue": (30, 40, 200)}
QUESTION_TEMPLATES = ("what colour is it?", "which colour is shown?")


def image_path(root: Path, split: str, image_id: int) -> Path:
    """Where the release keeps a COCO 2014 image."""
    return root / split / f"COCO_{split}_{image_id:012d}.jpg"


def _answers(texts: list[str]) -> list[dict]:
    return [
        {"answer": text, "answer_confidence": "yes", "answer_id": i + 1}
        for i, text in enumerate(texts)
    ]


def colour_question(image_id: int, question_id: int, colour: str, split: str) -> tuple:
    """A question about the image's colour: eight humans say it, two say something else."""
    humans = [colour] * 7 + [colour.capitalize() + "."] + ["dark", "not sure"]
    question = {
        "image_id": image_id,
        "question": QUESTION_TEMPLATES[question_id % 2],
        "question_id": question_id,
    }
    annotation = {
        "question_type": "what color is the",
        "multiple_choice_answer": colour,
        "answers": _answers(humans),
        "image_id": image_id,
        "answer_type": "other",
        "question_id": question_id,
    }
    return question, annotation


def write_vqav2(
    root: Path,
    images: dict[str, int] | None = None,
    extra: dict[str, list[tuple[dict, dict]]] | None = None,
) -> Path:
    """``v2_*_questions.json``, ``v2_*_annotations.json`` and the JPEGs of each split.

    Every image is red or blue and has one colour question (answer its colour); ``extra``
    adds ``(question, annotation)`` pairs per split for images already written.

    Args:
        root: Folder to write.
        images: Images per split; ``{"train2014": 12, "val2014": 8}`` by default.
        extra: Further questions per split.
    """
    images = images or {"train2014": 12, "val2014": 8}
    for split, count in images.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        base = 100 if split == "train2014" else 500
        pairs = []
        for i in range(count):
            image_id = base + i
            colour = ("red", "blue")[i % 2]
            Image.new("RGB", (20, 16), PAINT[colour]).save(
                image_path(root, split, image_id), format="JPEG"
            )
            pairs.append(colour_question(image_id, image_id * 10, colour, split))
        pairs += (extra or {}).get(split, [])
        header = {"info": {"description": "fixture"}, "license": {}, "data_subtype": split}
        questions = {
            **header,
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "questions": [q for q, _ in pairs],
        }
        annotations = {**header, "data_type": "mscoco", "annotations": [a for _, a in pairs]}
        (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps(questions))
        (root / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps(annotations))
    return root


def question(
    image_id: int, question_id: int, text: str, humans: list[str], answer_type: str
) -> tuple[dict, dict]:
    """A ``(question, annotation)`` pair with the given ten human answers."""
    return (
        {"image_id": image_id, "question": text, "question_id": question_id},
        {
            "question_type": "how many" if answer_type == "number" else "is the",
            "multiple_choice_answer": max(set(humans), key=humans.count),
            "answers": _answers(humans),
            "image_id": image_id,
            "answer_type": answer_type,
            "question_id": question_id,
        },
    )


def write_karpathy_file(root: Path, splits: dict[int, str]) -> Path:
    """``dataset_coco.json`` (Karpathy's caption splits) with the given image splits."""
    images = [
        {
            "cocoid": cocoid,
            "split": split,
            "filepath": "val2014" if cocoid >= 500 else "train2014",
            "filename": "unused.jpg",
            "sentences": [{"raw": "a picture"}],
        }
        for cocoid, split in splits.items()
    ]
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    return path
