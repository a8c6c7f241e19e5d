"""Label checks of manifest data: class lists pinned by data.label_names, suspicious labels."""

import csv
import json

from mmexp.data.datamodule import ManifestDataModule


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
    return ManifestDataModule(root, modalities=["text"], **options)


def test_multilabel_csv_label_sets_are_checked_member_by_member(tmp_path):
    rows = text_rows({"train": ["x|y", "y"], "val": ["x"], "test": ["y|x"]}, column="tags")
    root = write_csv(tmp_path / "data", rows)
    (root / "meta.json").write_text(json.dumps({"label_names": ["x", "y"]}))
    dm = text_module(root, manifest="manifest.csv", label_column="tags", multilabel=True)
    assert dm.dataset("train", processed=False).labels == [[1, 1], [0, 1]]
