"""Label checks of manifest data: class lists pinned by data.label_names, suspicious labels."""

import csv
import json
import logging
import re

import pytest

from mmexp.data.datamodule import ManifestDataModule
from mmexp.encoders import SmallTextTransformer


def write_jsonl(root, rows, name="manifest.jsonl"):
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def write_csv(root, rows, name="manifest.csv"):
    root.mkdir(parents=True, exist_ok=True)
    with (root / name).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def text_rows(labels_by_split, column="label"):
    """Text-only rows (no files to write), ids ``<split><i>``, in split order."""
    return [
        {"id": f"{split}{i}", "split": split, "text": f"sample {split}{i}", column: label}
        for split, labels in labels_by_split.items()
        for i, label in enumerate(labels)
    ]


def text_module(root, **options):
    dm = ManifestDataModule(root, modalities=["text"], **options)
    encoder = SmallTextTransformer(8, width=8, depth=1, heads=2)
    dm.set_processors({"text": encoder.processor(True)}, {"text": encoder.processor(False)})
    return dm


def test_multilabel_csv_label_sets_are_checked_member_by_member(tmp_path):
    rows = text_rows({"train": ["x|y", "y"], "val": ["x"], "test": ["y|x"]}, column="tags")
    root = write_csv(tmp_path / "data", rows)
    (root / "meta.json").write_text(json.dumps({"label_names": ["x", "y"]}))
    dm = text_module(root, manifest="manifest.csv", label_column="tags", multilabel=True)
    assert dm.dataset("train", processed=False).labels == [[1, 1], [0, 1]]


CLEAN = {"train": ["cat", "dog", "cat", "dog"], "val": ["dog", "cat"], "test": ["cat", "dog"]}


def test_label_names_set_the_class_indices_in_their_order(tmp_path):
    root = write_jsonl(tmp_path / "data", text_rows(CLEAN))
    inferred = text_module(root)
    pinned = text_module(root, label_names=["dog", "cat"])
    assert inferred.label_names == ["cat", "dog"]  # sorted values, as before
    assert pinned.label_names == ["dog", "cat"] and pinned.num_classes == 2
    assert inferred.dataset("train", processed=False).labels == [0, 1, 0, 1]
    assert pinned.dataset("train", processed=False).labels == [1, 0, 1, 0]
    assert pinned.dataset("test", processed=False).labels == [1, 0]


def test_label_names_may_declare_a_class_the_data_lacks(tmp_path):
    root = write_jsonl(tmp_path / "data", text_rows(CLEAN))
    dm = text_module(root, label_names=["cat", "dog", "bird"])
    assert dm.num_classes == 3
    assert dm.dataset("val", processed=False).labels == [1, 0]


def test_integer_labels_are_matched_to_label_names_as_text(tmp_path):
    labels = {"train": [0, 1, 2, 2], "val": [1, 0], "test": [2, 0]}
    root = write_jsonl(tmp_path / "data", text_rows(labels))
    # YAML gives numbers for [2, 0, 1]; the index follows the list, not the value.
    dm = text_module(root, label_names=[2, 0, 1])
    assert dm.label_names == ["2", "0", "1"]
    assert dm.dataset("train", processed=False).labels == [1, 2, 0, 0]
    assert text_module(root).dataset("train", processed=False).labels == [0, 1, 2, 2]


def test_a_label_outside_label_names_is_named_with_file_and_row_at_setup(tmp_path):
    labels = {"train": ["cat", "dog", "cat", "dgo"], "val": ["dog", "cat"], "test": ["cat"]}
    root = write_jsonl(tmp_path / "data", text_rows(labels))
    dm = text_module(root, label_names=["cat", "dog"])
    with pytest.raises(ValueError, match="1 bad sample") as error:
        dm.setup("fit")
    message = str(error.value)
    assert f"{root / 'manifest.jsonl'}: train row 3 (id='train3'): unknown label 'dgo'" in message
    assert "labels allowed by data.label_names: ['cat', 'dog']" in message
    assert not dm.datasets


def test_a_label_outside_label_names_in_the_test_split_is_named_at_fit_and_stops_the_test(
    tmp_path, caplog
):
    labels = {"train": ["cat", "dog"], "val": ["dog", "cat"], "test": ["cat", "bird"]}
    root = write_jsonl(tmp_path / "data", text_rows(labels))
    dm = text_module(root, label_names=["cat", "dog"])
    named = r"test row 1 \(id='test1'\): unknown label 'bird'"
    # Fitting needs train and val only; the test split's problem is warned about up front.
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert re.search(r"the test split will not load.*\n.*" + named, caplog.text)
    with pytest.raises(ValueError, match=named):
        dm.setup("test")


def test_skip_leaves_rows_outside_label_names_out_and_records_them(tmp_path):
    labels = {"train": ["cat", "dog", "bird", "dog"], "val": ["dog", "cat"], "test": ["cat"]}
    root = write_jsonl(tmp_path / "data", text_rows(labels))
    dm = text_module(root, label_names=["cat", "dog"], on_bad_sample="skip")
    dm.setup("fit")
    assert dm.num_classes == 2
    assert dm.datasets["train"].labels == [0, 1, 1]
    assert [(b.stage, b.row, b.reason) for b in dm.bad_samples] == [
        ("train", "row 2 (id='train2')", "unknown label 'bird'")
    ]


def test_multilabel_rows_are_checked_against_label_names_per_member(tmp_path):
    tags = {"train": [["x", "y"], ["y"], ["x", "z"]], "val": [["x"]], "test": [["y"]]}
    root = write_jsonl(tmp_path / "data", text_rows(tags, column="tags"))
    options = {"label_column": "tags", "multilabel": True}
    dm = text_module(root, label_names=["y", "x"], **options)
    with pytest.raises(
        ValueError, match=r"train row 2 \(id='train2'\): unknown label\(s\) \['z'\]"
    ):
        dm.setup("fit")
    dm = text_module(root, label_names=["z", "y", "x"], **options)
    assert dm.dataset("train", processed=False).labels == [[0, 1, 1], [0, 1, 0], [1, 0, 1]]


def test_label_names_must_agree_with_the_classes_of_meta_json(tmp_path):
    root = write_jsonl(tmp_path / "data", text_rows({s: [0, 1] for s in CLEAN}))
    (root / "meta.json").write_text(json.dumps({"label_names": ["cat", "dog"]}))
    same = text_module(root, label_names=["cat", "dog"])
    assert same.dataset("train", processed=False).labels == [0, 1]  # indices, as meta.json's
    with pytest.raises(ValueError, match=re.escape("data.label_names=['dog', 'cat'] differs")):
        _ = text_module(root, label_names=["dog", "cat"]).num_classes


def test_an_unknown_label_against_meta_json_lists_its_classes(tmp_path):
    root = write_jsonl(tmp_path / "data", text_rows({"train": [0, 7], "val": [1], "test": [0]}))
    (root / "meta.json").write_text(json.dumps({"label_names": ["cat", "dog"]}))
    with pytest.raises(ValueError, match=r"train row 1 \(id='train1'\): unknown label 7") as error:
        text_module(root).setup("fit")
    assert "labels allowed by the data set (a name or 0..1): ['cat', 'dog']" in str(error.value)


@pytest.mark.parametrize(
    ("names", "match"),
    [
        ("cat", "must be a list"),
        ([], "non-empty"),
        (["cat", ""], "non-empty"),
        (["cat", "dog", "cat"], r"\['cat'\] more than once"),
    ],
)
def test_malformed_label_names_are_refused_when_the_module_is_built(tmp_path, names, match):
    with pytest.raises(ValueError, match=match):
        text_module(tmp_path, label_names=names)


def label_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "look wrong" in r.getMessage()]


def test_a_label_in_one_row_is_reported_with_file_and_row_once(tmp_path, caplog):
    labels = {**CLEAN, "train": ["cat", "dog", "unheard_of", "cat", "dog"]}
    root = write_jsonl(tmp_path / "data", text_rows(labels))
    dm = text_module(root)
    dm.setup("fit")
    dm.setup("test")
    assert dm.label_names == ["cat", "dog", "unheard_of"]  # still a class: reported, not refused
    manifest = str(root / "manifest.jsonl")
    assert dm.label_report == {
        "unheard_of": {
            "problems": ["one_row"],
            "rows": {"train": 1, "val": 0, "test": 0},
            "where": [{"source": manifest, "stage": "train", "row": "row 2 (id='train2')"}],
        }
    }
    json.dumps(dm.label_report)  # the run record stores it as is
    (warning,) = label_warnings(caplog)
    assert f"'unheard_of' is in one row only (train: 1, val: 0, test: 0) - {manifest}: " in warning
    assert "train row 2 (id='train2')" in warning and "data.label_names" in warning


def test_a_label_found_in_the_test_split_only_is_reported(tmp_path, caplog):
    labels = {**CLEAN, "test": ["cat", "bird", "dog", "bird"]}
    root = write_jsonl(tmp_path / "data", text_rows(labels))
    dm = text_module(root)
    dm.setup("test")
    entry = dm.label_report["bird"]
    assert list(dm.label_report) == ["bird"]
    assert entry["problems"] == ["not_in_train"]
    assert entry["rows"] == {"train": 0, "val": 0, "test": 2}
    assert [w["row"] for w in entry["where"]] == ["row 1 (id='test1')", "row 3 (id='test3')"]
    assert {w["stage"] for w in entry["where"]} == {"test"}
    (warning,) = label_warnings(caplog)
    assert "'bird' is in no training row (train: 0, val: 0, test: 2)" in warning


def test_a_single_row_label_of_the_test_split_has_both_problems(tmp_path):
    labels = {**CLEAN, "test": ["cat", "dog", "unheard_of"]}
    dm = text_module(write_jsonl(tmp_path / "data", text_rows(labels)))
    dm.setup("test")
    assert dm.label_report["unheard_of"]["problems"] == ["one_row", "not_in_train"]


def test_a_clean_manifest_has_no_report(tmp_path, caplog):
    dm = text_module(write_jsonl(tmp_path / "data", text_rows(CLEAN)))
    dm.setup("fit")
    assert dm.label_report == {}
    assert not label_warnings(caplog)


def test_a_small_data_set_whose_classes_each_have_a_training_row_has_no_report(tmp_path, caplog):
    # Two rows of a class, both in training, and evaluation splits without some classes:
    # what a legitimately small data set looks like.
    labels = {"train": ["a", "a", "b", "c", "b", "c"], "val": ["a"], "test": ["b"]}
    dm = text_module(write_jsonl(tmp_path / "data", text_rows(labels)))
    dm.setup("fit")
    assert dm.label_report == {}
    assert not label_warnings(caplog)


def test_integer_labels_are_reported_by_value(tmp_path):
    labels = {"train": [0, 1, 0, 1, 7], "val": [0, 1], "test": [1, 0]}
    dm = text_module(write_jsonl(tmp_path / "data", text_rows(labels)))
    assert dm.num_classes == 8  # the typo makes classes 2..7: what the report points at
    dm.setup("fit")
    assert list(dm.label_report) == ["7"]


def test_multilabel_rows_are_checked_per_label(tmp_path):
    tags = {
        "train": ["x|y", "y", "x|dramma"],
        "val": ["x", "y"],
        "test": ["y|x", "x|z", "z"],
    }
    root = write_csv(tmp_path / "data", text_rows(tags, column="tags"))
    dm = text_module(root, manifest="manifest.csv", label_column="tags", multilabel=True)
    dm.setup("fit")
    assert {name: entry["problems"] for name, entry in dm.label_report.items()} == {
        "dramma": ["one_row"],
        "z": ["not_in_train"],
    }
    assert dm.label_report["z"]["rows"] == {"train": 0, "val": 0, "test": 2}
    assert dm.label_report["dramma"]["where"][0]["row"] == "row 2 (id='train2')"


def test_labels_outside_label_names_are_left_to_screening(tmp_path):
    labels = {**CLEAN, "test": ["cat", "dog", "bird"]}
    root = write_jsonl(tmp_path / "data", text_rows(labels))
    dm = text_module(root, label_names=["cat", "dog"], on_bad_sample="skip")
    dm.setup("test")
    assert dm.label_report == {}
    assert [b.reason for b in dm.bad_samples] == ["unknown label 'bird'"]
