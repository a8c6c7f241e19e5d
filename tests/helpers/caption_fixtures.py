"""A few samples of UPMC Food-101 and of the Karpathy caption splits, in their release formats."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

# Each class has a colour, so there is something to learn from the image alone.
FOOD_CLASSES = {"apple_pie": (200, 160, 60), "pizza": (210, 40, 30), "sushi": (240, 240, 240)}
FOOD_SPLITS = {"train": 12, "test": 6}


def shaded(colour: tuple[int, int, int], key: int) -> tuple[int, int, int]:
    """``colour`` with its blue channel moved towards the middle by ``key % 97``: the colour
    stays recognisable, and the images of any 97 consecutive keys differ (saved as JPEG at
    quality 100, which keeps a step of 1 apart)."""
    red, green, blue = colour
    step = key % 97
    return red, green, blue + step if blue < 128 else blue - step


def write_food101(root: Path, splits: dict[str, int] = FOOD_SPLITS) -> Path:
    """``images/<split>/<class>/<class>_<n>.jpg`` and ``texts/<split>_titles.csv`` (rows
    ``filename,text,label``, no header) as in the UPMC Food-101 release."""
    (root / "texts").mkdir(parents=True, exist_ok=True)
    names = list(FOOD_CLASSES)
    # Rows are numbered across both splits, so that their images and titles differ (the
    # same file names recur in each split's folder).
    number = 0
    for split, count in splits.items():
        rows = []
        for i in range(count):
            label = names[i % len(names)]
            filename = f"{label}_{i}.jpg"
            folder = root / "images" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            number += 1
            Image.new("RGB", (40, 32), shaded(FOOD_CLASSES[label], number)).save(
                folder / filename, quality=100
            )
            # Titles of recipe pages, with commas (quoted in the CSV) now and then; each
            # names its row, so that a title read for the wrong row shows.
            title = label.replace("_", " ")
            if i % 2:
                text = f"Best {title} recipe no. {number}, easy and quick"
            else:
                text = f"{title} number {number}"
            rows.append([filename, text, label])
        with (root / "texts" / f"{split}_titles.csv").open(
            "w", newline="", encoding="utf-8"
        ) as handle:
            csv.writer(handle).writerows(rows)
    return root


COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}
# Images per Karpathy split; COCO's train set is train + restval.
CAPTION_SPLITS = {"train": 6, "restval": 2, "val": 3, "test": 4}


def _sentences(colour: str, image_id: int, count: int, first_sentid: int) -> list[dict]:
    templates = [
        "a {c} square",
        "A photo of something {c}.",
        "the picture is {c}",
        "{c} all over",
        "mostly {c} pixels, picture {n}",
        "an image in {c}",
        "plain {c}",
    ]
    sentences = []
    for k in range(count):
        # One caption numbers its image, so that the captions of two images of one colour
        # differ, and captions read for the wrong image show.
        raw = templates[k % len(templates)].format(c=colour, n=image_id)
        sentences.append(
            {
                "tokens": raw.lower().strip(".").split(),
                "raw": raw,
                "imgid": image_id,
                "sentid": first_sentid + k,
            }
        )
    return sentences


def write_karpathy(
    root: Path,
    dataset: str = "coco",
    splits: dict[str, int] = CAPTION_SPLITS,
    image_dir: str = "flickr30k-images",
) -> Path:
    """``dataset_<name>.json`` in Karpathy's format and the images it references.

    COCO images go to ``<filepath>/<filename>`` (train2014 or val2014, ``cocoid`` given);
    Flickr30k images to ``<image_dir>/<filename>`` (``flickr30k-images``, or Kaggle's
    ``flickr30k_images``). Every fifth COCO image has six captions, as a few real ones do.
    """
    images = _karpathy_images(root, dataset, splits, image_dir)
    (root / f"dataset_{dataset}.json").write_text(
        json.dumps({"images": images, "dataset": dataset})
    )
    return root


def _karpathy_images(
    root: Path, dataset: str, splits: dict[str, int], image_dir: str
) -> list[dict]:
    images = []
    sentid = 0
    colours = list(COLOURS)
    for split, count in splits.items():
        if dataset == "flickr30k" and split == "restval":
            continue
        for _ in range(count):
            image_id = len(images)
            colour = colours[image_id % len(colours)]
            captions = 6 if dataset == "coco" and image_id % 5 == 4 else 5
            entry = {
                "sentids": list(range(sentid, sentid + captions)),
                "imgid": image_id,
                "sentences": _sentences(colour, image_id, captions, sentid),
                "split": split,
            }
            sentid += captions
            if dataset == "coco":
                folder = "train2014" if split == "train" else "val2014"
                cocoid = 100000 + image_id
                entry.update(
                    filepath=folder, filename=f"COCO_{folder}_{cocoid:012d}.jpg", cocoid=cocoid
                )
                path = root / folder / entry["filename"]
            else:
                entry["filename"] = f"{1000000 + image_id}.jpg"
                path = root / image_dir / entry["filename"]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (36, 30), shaded(COLOURS[colour], image_id)).save(path, quality=100)
            images.append(entry)
    return images


def write_lavis(
    root: Path,
    dataset: str = "coco",
    splits: dict[str, int] = CAPTION_SPLITS,
    image_dir: str = "flickr30k-images",
) -> Path:
    """The same images and captions as :func:`write_karpathy`, in BLIP's/LAVIS's files.

    ``coco_karpathy_{train,val,test}.json`` or ``flickr30k_{train,val,test}.json``: the
    training file (train + restval) holds one ``{"caption", "image", "image_id"}`` per
    caption, the others one ``{"image", "caption": [...]}`` per image with every caption.
    ``image`` is ``val2014/COCO_val2014_….jpg`` or ``flickr30k-images/<n>.jpg``, as in the
    real files, whatever ``image_dir`` the images are written to.
    """
    images = _karpathy_images(root, dataset, splits, image_dir)
    name = "coco_karpathy_{}.json" if dataset == "coco" else "flickr30k_{}.json"
    files: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for entry in images:
        if dataset == "coco":
            image, image_id = f"{entry['filepath']}/{entry['filename']}", f"coco_{entry['cocoid']}"
        else:
            image, image_id = f"flickr30k-images/{entry['filename']}", entry["filename"][:-4]
        captions = [s["raw"] for s in entry["sentences"]]
        if entry["split"] in ("train", "restval"):
            files["train"] += [
                {"caption": c, "image": image, "image_id": image_id} for c in captions
            ]
        else:
            files[entry["split"]].append({"image": image, "caption": captions})
    for split, rows in files.items():
        (root / name.format(split)).write_text(json.dumps(rows))
    return root
