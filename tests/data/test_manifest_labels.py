"""Label checks of manifest data: class lists pinned by data.label_names, suspicious labels."""

import csv
import json
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


def test_a_label_outside_label_names_in_the_test_split_stops_the_fit_setup(tmp_path):
    labels = {"train": ["cat", "dog"], "val": ["dog", "cat"], "test": ["cat", "bird"]}
    root = write_jsonl(tmp_path / "data", text_rows(labels))
    with pytest.raises(ValueError, match=r"test row 1 \(id='test1'\): unknown label 'bird'"):
        text_module(root, label_names=["cat", "dog"]).setup("fit")


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
