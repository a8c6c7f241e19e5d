"""The reference captions that caption metrics score against, as the loaders give them."""

import json
import re

import pytest

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.sets.karpathy_captions import KarpathyCaptionsDataModule
from mmexp.data.shapes import generate_shapes
from mmexp.data.shapes.attributes import COLOURS, SHAPES
from mmexp.data.shapes.render import SYNONYMS
from mmexp.encoders.processors import TextProcessor
from mmexp.encoders.text_transformer import byte_tokenizer
from tests.helpers.caption_fixtures import write_karpathy


class Identity:
    """A processor that keeps raw values (the loaders' strings and images)."""

    def __call__(self, raw):
        return raw

    def collate(self, items):
        return list(items)


def test_shapes_references_describe_the_image_not_the_caption_modality(tmp_path):
    # unique_text: the caption names a random shape and colour; the references must name the
    # image's own
    folder = generate_shapes(tmp_path, "unique_text", {"train": 4, "val": 30}, seed=3)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").open()]
    differs = 0
    for row in rows:
        captions = row["captions"]
        assert len(captions) == 5 and len(set(captions)) > 1  # worded apart
        shown = row["attributes"]["image"]
        colours = SYNONYMS[shown["colour"]]
        shapes = SYNONYMS[shown["shape"]]
        for caption in captions:
            # the caption names the colour immediately followed by the shape
            named = " " + re.sub(r"[,.]", " ", caption) + " "
            pairs = [f" {c} {s} " for c in colours for s in shapes]
            assert any(pair in named for pair in pairs), (caption, shown)
        differs += row["attributes"]["text"]["shape"] != shown["shape"]
    assert differs > 10  # the caption modality often names another shape
    assert set(SHAPES) >= {r["attributes"]["image"]["shape"] for r in rows}
    assert set(COLOURS) >= {r["attributes"]["image"]["colour"] for r in rows}


def manifest_module(root, **options):
    module = ManifestDataModule(
        root, modalities=["text"], references_column="refs", eval_batch_size=2, **options
    )
    processor = TextProcessor(byte_tokenizer(), 16)
    module.set_processors({"text": processor}, {"text": processor})
    return module


def write_manifest(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    with (root / "manifest.jsonl").open("w") as file:
        for row in rows:
            file.write(json.dumps(row) + "\n")


def test_manifest_evaluation_batches_carry_the_references(tmp_path):
    rows = [
        {
            "id": f"{split}{i}",
            "split": split,
            "text": f"t{i}",
            "label": i % 2,
            "refs": [f"a{i}", f"b{i}"],
        }
        for split in ("train", "val", "test")
        for i in range(4)
    ]
    write_manifest(tmp_path, rows)
    module = manifest_module(tmp_path)
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    assert batch["references"] == [["a0", "b0"], ["a1", "b1"]]
    assert "references" not in next(iter(module.train_dataloader()))


@pytest.mark.parametrize("refs", [[], ["fine", "  "], "one string"])
def test_an_empty_or_malformed_reference_is_named_with_its_row(tmp_path, refs):
    rows = [
        {"id": f"{split}{i}", "split": split, "text": "t", "label": 0, "refs": ["ok"]}
        for split in ("train", "val", "test")
        for i in range(2)
    ]
    rows[3]["refs"] = refs  # val1
    write_manifest(tmp_path, rows)
    module = manifest_module(tmp_path)
    module.setup("validate")
    with pytest.raises(ValueError, match=r"val1.*refs"):
        list(module.val_dataloader())


def test_caption_sets_give_every_reference_beyond_a_trimmed_gallery(tmp_path):
    root = write_karpathy(tmp_path / "coco")
    module = KarpathyCaptionsDataModule(
        root, dataset="coco", eval_captions=5, eval_batch_size=4, num_workers=0
    )
    module.set_processors(
        {"image": Identity(), "text": Identity()}, {"image": Identity(), "text": Identity()}
    )
    module.setup("test")
    batch = next(iter(module.test_dataloader()))
    entries = json.loads((root / "dataset_coco.json").read_text())["images"]
    test = [e for e in entries if e["split"] == "test"]
    expected = [[s["raw"] for s in e["sentences"]] for e in test]
    assert batch["references"] == expected
    assert any(len(refs) == 6 for refs in expected)  # six captions, five in the gallery
    assert len(batch["text"]) == 5 * len(test)
