"""The shapes ``vqa`` task: questions, answers, chance rates, and the other tasks untouched."""

import hashlib
import json
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from mmexp.data.shapes import TASKS, generate_shapes
from mmexp.data.shapes.questions import ANSWERS, QUESTION_TYPES, sample_question
from mmexp.data.shapes_datamodule import ShapesDataModule
from mmexp.metrics.vqa import ANSWER_TYPES

DRAWS = 30000
CORNERS = {"circle": "0", "triangle": "3", "square": "4"}
VALUES = {
    "colour": ("red", "green", "blue", "yellow"),
    "shape": ("circle", "square", "triangle"),
    "size": ("small", "large"),
    "position": ("top left", "top right", "bottom left", "bottom right"),
}
# Digest of each other task's samples (ids, text, labels, attributes, PNG and WAV bytes) at
# splits {"train": 6, "val": 3}, seed 11, as generated before the vqa task existed.
OTHER_TASKS = {
    "mixed": "a72475b75c25e5a8",
    "redundant": "fdc5ca58aa221e3b",
    "synergy": "ec935912d1f05f6d",
    "unique_audio": "266c92795e4cd776",
    "unique_image": "bdf2bbf48d926c3e",
    "unique_text": "fd1d4c32fa342c43",
}


def rows_of(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def answer_from(attributes) -> str:
    # The answer worked out from the manifest's record of what image and question show.
    text = attributes["text"]
    ((attribute, value),) = text["refer_by"].items()
    target = next(o for o in attributes["image"]["objects"] if o[attribute] == value)
    if text["question_type"] == "verify":
        return "yes" if target[text["asked"]] == text["verified"] else "no"
    if text["question_type"] == "corners":
        return CORNERS[target["shape"]]
    return target[text["asked"]]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("vqa"), "vqa", {"train": 300}, seed=3)


def test_each_row_is_a_question_whose_label_is_its_answer(generated):
    rows = rows_of(generated)
    meta = json.loads((generated / "meta.json").read_text())
    assert meta["label_names"] == list(ANSWERS)
    for row in rows:
        objects = row["attributes"]["image"]["objects"]
        assert len(objects) == 2
        assert all(objects[0][k] != objects[1][k] for k in VALUES)  # named uniquely
        assert row["text"].endswith("?")
        answer = ANSWERS[row["label"]]
        assert answer == answer_from(row["attributes"]), row
        kind = row["question_type"]
        assert row["answer_type"] == {"corners": "number", "verify": "yes/no"}.get(kind, "other")
        assert row["attributes"]["text"]["question_type"] == kind
    assert Counter(r["answer_type"] for r in rows).keys() == set(ANSWER_TYPES)


def test_questions_vary_their_wording(generated):
    rows = rows_of(generated)
    colour = [r["text"] for r in rows if r["question_type"] == "colour"]
    assert len({t.split(" the ")[0] for t in colour}) == 3  # three templates
    assert any("crimson" in r["text"] or "scarlet" in r["text"] for r in rows)


@pytest.fixture(scope="module")
def draws():
    rng = np.random.default_rng(2024)
    return [sample_question(rng) for _ in range(DRAWS)]


def test_question_types_targets_and_yes_no_are_balanced(draws):
    types = Counter(scene.question_type for scene, _ in draws)
    assert all(abs(c / DRAWS - 1 / len(QUESTION_TYPES)) < 0.01 for c in types.values())
    assert abs(sum(scene.target for scene, _ in draws) / DRAWS - 0.5) < 0.01
    verify = [ANSWERS[label] for scene, label in draws if scene.question_type == "verify"]
    assert abs(verify.count("yes") / len(verify) - 0.5) < 0.02


def question_key(scene):
    # everything the question tells: its type, how it names the object, what it verifies
    named = scene.objects[scene.target].value(scene.refer_by)
    return (scene.question_type, scene.refer_by, named, scene.asked, scene.verified)


def test_the_question_alone_answers_at_13_in_36(draws):
    # The best answer per question learnt on one half and scored on the other: the best
    # count on the same draws would gain from noise in the hundreds of rare questions.
    by_question = defaultdict(Counter)
    for scene, label in draws[: DRAWS // 2]:
        by_question[question_key(scene)][label] += 1
    guess = {key: counts.most_common(1)[0][0] for key, counts in by_question.items()}
    held_out = draws[DRAWS // 2 :]
    right = sum(guess.get(question_key(scene)) == label for scene, label in held_out)
    assert right / len(held_out) == pytest.approx(13 / 36, abs=0.02)


def test_the_image_alone_gives_no_answer_more_than_one_in_12(draws):
    # Which answer the image would favour: each object's value of each attribute, and its
    # corner count; no such answer (nor yes / no) is right more often than 1/12.
    hits = Counter()
    for scene, label in draws:
        answer = ANSWERS[label]
        first = scene.objects[0]
        for name, values in VALUES.items():
            hits[name] += answer == values[first.value(name)]
        hits["corners"] += answer == CORNERS[VALUES["shape"][first.shape]]
        hits["yes"] += answer == "yes"
    assert all(abs(h / DRAWS - 1 / 12) < 0.01 for h in hits.values()), hits


def test_late_fusion_can_only_pick_one_of_the_two_objects(draws):
    # Given the question, the answer is either object's value alike: a sum of unimodal
    # scores (which cannot tell the objects apart) is right half of the time.
    asked = [(s, ANSWERS[label]) for s, label in draws if s.question_type not in ("verify",)]
    first = sum(
        answer
        == (
            CORNERS[VALUES["shape"][s.objects[0].shape]]
            if s.question_type == "corners"
            else VALUES[s.asked][s.objects[0].value(s.asked)]
        )
        for s, answer in asked
    )
    assert first / len(asked) == pytest.approx(0.5, abs=0.015)


def test_the_other_tasks_generate_the_same_bytes(tmp_path):
    for task in sorted(set(TASKS) - {"vqa"}):
        folder = generate_shapes(tmp_path, task, splits={"train": 6, "val": 3}, seed=11)
        digest = hashlib.sha1()
        for row in rows_of(folder):
            for key in ("id", "text", "label"):
                digest.update(json.dumps(row[key]).encode())
            digest.update(json.dumps(row["attributes"], sort_keys=True).encode())
            for key in ("image", "audio"):
                digest.update((folder / row[key]).read_bytes())
        assert digest.hexdigest()[:16] == OTHER_TASKS[task], task


def test_batches_carry_the_answer_type(tmp_path):
    data = ShapesDataModule(
        task="vqa", cache_dir=tmp_path, num_train=12, num_val=4, num_test=4, batch_size=4
    )
    data.prepare_data()

    class Raw:
        def __call__(self, value):
            return value

        def collate(self, values):
            return list(values)

    data.set_processors({"image": Raw(), "text": Raw()}, {"image": Raw(), "text": Raw()})
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    rows = data.datasets["train"].rows
    expected = [ANSWER_TYPES.index(rows[i]["answer_type"]) for i in batch["index"].tolist()]
    assert batch["answer_type"].tolist() == expected
    assert batch["answer_type"].dtype == torch.long
    assert data.num_classes == len(ANSWERS) == 18
