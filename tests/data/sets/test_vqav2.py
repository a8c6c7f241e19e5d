"""VQA v2 from a few questions in the release's JSON schema, through mmexp-train."""

import json
import logging

import pytest
import torch

from mmexp.data.sets.vqav2 import VQAv2DataModule
from mmexp.metrics.vqa import ANSWER_TYPES
from mmexp.metrics.vqa_answers import answer_scores, vqa_accuracy
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.vqa_fixtures import image_path, question, write_karpathy_file, write_vqav2

FAST = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
LOADER = {"num_workers": 0, "persistent_workers": False, "pin_memory": False, "batch_size": 4}

EXTRA = {
    "train2014": [
        # "Two" and "two" count as "2"; "2" ties "3" on count, so the vocabulary's order
        # between them is the string's
        question(100, 1, "how many dogs?", ["Two", "2", "two", "3"] + ["2"] * 6, "number"),
        question(101, 2, "how many cats?", ["3"] * 10, "number"),
        question(102, 3, "is it a dog?", ["yes"] * 4 + ["no"] * 6, "yes/no"),
    ],
    "val2014": [
        # no human answer is in the vocabulary: scored 0 whatever the model says
        question(500, 4, "what breed?", ["poodle"] * 6 + ["terrier"] * 4, "other"),
        question(501, 5, "is it a dog?", ["yes"] * 9 + ["no"], "yes/no"),
        # ten identical answers are compared unnormalised: "No" is not the vocabulary's "no"
        question(502, 6, "is it blue?", ["No"] * 10, "yes/no"),
    ],
}


class _Identity:
    def __call__(self, value):
        return value

    def collate(self, values):
        return list(values)


RAW = {"image": _Identity(), "text": _Identity()}


def datamodule(root, **options):
    return VQAv2DataModule(root, check_counts="off", **{**LOADER, **options})


@pytest.fixture
def release(tmp_path):
    return write_vqav2(tmp_path / "vqa", extra=EXTRA)


def test_vocabulary_ranks_normalised_training_answers_by_count_then_string(release):
    data = datamodule(release, num_answers=4)
    # train: red 6, blue 6, then 2, 3, no (one each; the string breaks ties), "no" left out
    assert data.vocabulary == ["blue", "red", "2", "3"]
    assert data.label_names == data.vocabulary and data.num_classes == 4
    assert datamodule(release).num_classes == 5  # every training answer once K exceeds them


def test_rows_carry_the_question_image_answers_and_type(release):
    data = datamodule(release)
    rows = {r["id"]: r for r in data._splits["val"]}
    row = rows[5000]
    assert row["image"] == "val2014/COCO_val2014_000000000500.jpg"
    assert (release / row["image"]).is_file()
    assert row["question"] == "what colour is it?" and row["answer_type"] == "other"
    assert len(row["answers"]) == 10
    assert rows[5]["question"] == "is it a dog?"


def test_batches_hold_the_official_score_of_every_vocabulary_answer(release):
    data = datamodule(release)
    data.set_processors(RAW, RAW)
    dataset = data.dataset("val")
    batch = data.collator("val")([dataset[i] for i in range(len(dataset))])
    vocabulary = data.vocabulary
    for position, row in enumerate(dataset.rows):
        expected = torch.zeros(len(vocabulary))
        for answer, score in answer_scores(row["answers"]).items():
            if answer in vocabulary:
                expected[vocabulary.index(answer)] = score
        assert torch.allclose(batch["label"][position], expected), row["id"]
        assert batch["answer_type"][position] == ANSWER_TYPES.index(row["answer_type"])
        # the target of the top answer is the official accuracy of predicting it
        for answer in vocabulary:
            value = batch["label"][position, vocabulary.index(answer)].item()
            assert value == pytest.approx(vqa_accuracy(answer, row["answers"]), abs=1e-6)
    red = dataset.rows.index(next(r for r in dataset.rows if r["id"] == 5000))
    assert batch["label"][red, vocabulary.index("red")] == 1.0  # "red" x7 and "Red."
    assert data.out_of_vocabulary == {"val": 2}  # the breed question and the "No" one
    for question_id in (4, 6):
        row = next(i for i, r in enumerate(dataset.rows) if r["id"] == question_id)
        assert batch["label"][row].sum() == 0
    assert "no" in vocabulary


def test_counts_are_checked_against_the_release(release, caplog):
    with pytest.raises(ValueError, match=r"train2014 questions: 15 found, 443757 published"):
        _ = VQAv2DataModule(release, check_counts="raise", **LOADER)._splits
    with caplog.at_level(logging.WARNING):
        _ = VQAv2DataModule(release, check_counts="warn", **LOADER)._splits
    assert "val2014 images: 8 found, 40504 published" in caplog.text


def test_missing_files_say_where_to_get_the_release(release):
    (release / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"v2_mscoco_val2014_annotations.json.*visualqa"):
        _ = datamodule(release)._splits


def test_a_missing_image_is_named_and_a_corrupt_one_when_read(release):
    image_path(release, "val2014", 503).unlink()
    with pytest.raises(ValueError, match=r"missing image file .*COCO_val2014_000000000503.jpg"):
        _ = datamodule(release)._splits["val"]
    skipping = datamodule(release, on_bad_sample="skip")
    assert len(skipping._splits["val"]) == 10 and len(skipping.bad_samples) == 1

    image_path(release, "val2014", 504).write_bytes(b"not a jpeg")
    strict = datamodule(release, check_files=False)
    strict.set_processors(RAW, RAW)
    dataset = strict.dataset("val")
    corrupt = next(i for i, r in enumerate(dataset.rows) if r["image_id"] == 504)
    with pytest.raises(ValueError, match=r"corrupt image file .*COCO_val2014_000000000504.jpg"):
        dataset[corrupt]


def test_a_question_without_annotation_is_refused(release):
    path = release / "v2_mscoco_val2014_annotations.json"
    content = json.loads(path.read_text())
    content["annotations"] = content["annotations"][1:]
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"no annotation for 1 question"):
        _ = datamodule(release)._splits


def test_test_dev_has_no_annotations_and_is_refused(release):
    with pytest.raises(ValueError, match=r"no annotations for test2015, test-dev2015"):
        VQAv2DataModule(release, test_split="test-dev2015")


def test_karpathy_protocol_splits_both_files_by_image(release):
    karpathy = {**{i: "train" for i in range(100, 112)}, 500: "restval", 501: "restval"}
    karpathy.update({500 + i: "val" for i in range(2, 5)})
    karpathy.update({500 + i: "test" for i in range(5, 8)})
    write_karpathy_file(release, karpathy)
    splits = datamodule(release, protocol="karpathy")._splits
    images = {stage: {r["image_id"] for r in rows} for stage, rows in splits.items()}
    assert images["train"] == set(range(100, 112)) | {500, 501}
    assert images["val"] == {502, 503, 504} and images["test"] == {505, 506, 507}
    assert len(splits["train"]) == 12 + 3 + 2 + 2  # colour questions and the extra ones


def test_training_on_the_release_format_learns_the_colour_answers(tmp_path, data_dir):
    """Each image answers its colour question; seeds 0 and 42 reach test/vqa_acc 1.0."""
    root = write_vqav2(tmp_path / "vqa", images={"train2014": 24, "val2014": 12})
    cfg = compose_config(
        "train",
        [
            *FAST,
            "data=vqav2",
            f"data.root={root}",
            *[f"data.{k}={str(v).lower()}" for k, v in LOADER.items()],
            "data.check_counts=off",
            "objective=vqa",
            "fusion=concat",
            "trainer.max_epochs=6",
            "seed=0",
        ],
        tmp_path / "run",
        data_dir,
    )
    metrics = train(cfg)["metrics"]
    # every answer scores 1.0 ("red" x7 and "Red." normalise alike): a constant guess 0.5
    assert metrics["test/vqa_acc"] > 0.9, metrics
    assert metrics["test/vqa_acc_other"] == metrics["test/vqa_acc"]
