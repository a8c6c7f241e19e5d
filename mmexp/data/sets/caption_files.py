"""The two annotation formats of the Karpathy caption splits, read into one entry list.

- Karpathy's ``dataset_coco.json`` / ``dataset_flickr30k.json`` (``caption_datasets.zip``):
  one file, ``{"images": [{"filepath", "filename", "split", "sentences": [{"raw"}]}],
  "dataset": ...}``.
- The per-split files of BLIP and LAVIS (``coco_karpathy_{train,val,test}.json``,
  ``flickr30k_{train,val,test}.json``, see BLIP's ``data/coco_karpathy_dataset.py``): the
  training file lists one ``{"image", "caption", "image_id"}`` per caption, the val/test
  files one ``{"image", "caption": [...]}`` per image, with every caption (COCO 5k: 25,010).
  ``image`` is a path under the image root (``val2014/COCO_val2014_….jpg``,
  ``flickr30k-images/….jpg``). Their training file merges the training splits
  (COCO: ``train`` + ``restval``).

Both become Karpathy-style entries ``{"filename", "filepath"?, "split", "sentences"}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# data.annotations value that selects the per-split BLIP/LAVIS files.
LAVIS = "lavis"
LAVIS_FILES = {"coco": "coco_karpathy_{split}.json", "flickr30k": "flickr30k_{split}.json"}
LAVIS_URL = "https://storage.googleapis.com/sfr-vision-language-research/datasets/"
# LAVIS's own cache keeps them in <dataset>/annotations/, beside <dataset>/images/.
LAVIS_FOLDERS = ("", "annotations")


def lavis_paths(root: Path, dataset: str) -> dict[str, Path]:
    """Where the BLIP/LAVIS file of each split is (in ``root`` or ``root/annotations``)."""
    paths = {}
    for split in ("train", "val", "test"):
        name = LAVIS_FILES[dataset].format(split=split)
        found = [root / f / name for f in LAVIS_FOLDERS if (root / f / name).is_file()]
        paths[split] = found[0] if found else root / name
    return paths


def lavis_missing(root: Path, dataset: str, name: str) -> FileNotFoundError:
    """The error for a missing per-split file: which file, where looked, where to get it."""
    file = LAVIS_FILES[dataset].format(split=name)
    return FileNotFoundError(
        f"{dataset}: data.annotations=lavis needs {file} in {root} or {root / 'annotations'} "
        f"(BLIP's download: {LAVIS_URL}{file}); or point data.annotations at Karpathy's "
        f"dataset_{dataset}.json"
    )


def read_karpathy(path: Path, dataset: str) -> list[dict[str, Any]]:
    """The entries of Karpathy's single file, checked to be the expected data set's.

    Raises:
        ValueError: Not a Karpathy file (a per-split BLIP/LAVIS file is named as such), or
            one of another data set.
    """
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    if isinstance(data, list):
        raise ValueError(
            f"{path} is a BLIP/LAVIS per-split file (a list of image/caption entries), not "
            f"Karpathy's dataset_{dataset}.json: set data.annotations=lavis to read all three "
            f"({LAVIS_FILES[dataset].format(split='{train,val,test}')})"
        )
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected a Karpathy split file with an 'images' list")
    if data.get("dataset", dataset) != dataset:
        raise ValueError(
            f"{path} holds the {data['dataset']!r} captions, not {dataset!r}; "
            "check data.dataset and data.annotations"
        )
    return data["images"]


def _captions(value: Any) -> list[str]:
    return [str(c) for c in value] if isinstance(value, list) else [str(value)]


def read_lavis(paths: dict[str, Path], prefixes: Sequence[str]) -> list[dict[str, Any]]:
    """Entries from the per-split files; training captions grouped by image, in file order.

    Args:
        paths: The file of each split (``train``, ``val``, ``test``).
        prefixes: Image folders that ``image`` paths start with and that ``image_dir``
            stands for (Flickr30k: ``flickr30k-images``); they are cut off so that the
            image folder can be found under another name.

    Raises:
        ValueError: A file is not a list of ``{"image", "caption"}`` entries.
    """
    entries: list[dict[str, Any]] = []
    for split, path in paths.items():
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, list) or not all(
            isinstance(e, dict) and "image" in e and "caption" in e for e in data
        ):
            raise ValueError(f"{path}: expected a BLIP/LAVIS list of image/caption entries")
        # One entry per caption in the training file: group them by image, keeping order.
        by_image: dict[str, dict[str, Any]] = {}
        for item in data:
            image = str(item["image"])
            if image not in by_image:
                folder, _, filename = image.rpartition("/")
                entry = {"filename": filename, "split": split, "sentences": []}
                if folder and folder not in prefixes:
                    entry["filepath"] = folder
                by_image[image] = entry
            by_image[image]["sentences"] += [{"raw": c} for c in _captions(item["caption"])]
        entries.extend(by_image.values())
    return entries


def image_folder(root: Path, candidates: Sequence[str]) -> str:
    """The first of ``candidates`` that is a folder under ``root``, else the first one."""
    for candidate in candidates:
        if (root / candidate).is_dir():
            return candidate
    return candidates[0]
