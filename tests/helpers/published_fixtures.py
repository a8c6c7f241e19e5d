"""A few samples of published data sets, written exactly in their release formats."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from PIL import Image

HATEFUL_SPLITS = {"train": 8, "dev_seen": 4, "test_seen": 4}
# The Phase 1 release (and its Kaggle mirror): train/dev/test, the test file without labels.
HATEFUL_PHASE1_SPLITS = {"train": 8, "dev": 4, "test": 4}


def row_shade(key: int) -> int:
    """A channel value in [40, 137) that differs between any 97 consecutive keys."""
    return 40 + key % 97


def write_hateful_memes(
    root: Path,
    splits: dict[str, int] = HATEFUL_SPLITS,
    unlabelled: Collection[str] = (),
    images: bool = True,
) -> Path:
    """``img/<id>.png`` and ``<split>.jsonl`` as in the Hateful Memes release.

    Args:
        root: Folder to write.
        splits: Rows per split file (without ``.jsonl``).
        unlabelled: Split files written without ``label``, as the challenge copies ship
            their test files.
        images: Write the PNGs; off for release-sized JSONL files read without images.
    """
    (root / "img").mkdir(parents=True, exist_ok=True)
    next_id = 10000
    for split, count in splits.items():
        lines = []
        for i in range(count):
            meme_id = next_id = next_id + 1
            label = i % 2
            if images:
                # Hateful memes are red here, so there is something to learn; the green
                # channel tells the memes apart, so that an image read for the wrong row shows.
                shade = row_shade(meme_id)
                colour = (200, shade, 30) if label else (30, shade, 200)
                Image.new("RGB", (48, 40), colour).save(root / "img" / f"{meme_id:05d}.png")
            line = {"id": meme_id, "img": f"img/{meme_id:05d}.png", "label": label}
            if split in unlabelled:
                del line["label"]
            lines.append({**line, "text": f"caption of meme {meme_id}"})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def write_hateful_memes_phase1(root: Path, splits: dict[str, int] = HATEFUL_PHASE1_SPLITS) -> Path:
    """The Phase 1 layout: ``train``, ``dev``, ``test.jsonl``, the test file unlabelled."""
    return write_hateful_memes(root, splits, unlabelled=("test",))


def write_hf_dataset(root: Path, splits: dict[str, int] | None = None) -> Path:
    """A data set in the Hugging Face hub layout: ``data/<split>-00000-of-00001.parquet``
    with ``Image`` / ``Value`` / ``ClassLabel`` features, as ``load_dataset`` reads it."""
    import datasets

    splits = splits or {"train": 8, "validation": 4, "test": 4}
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "caption": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["cat", "dog"]),
        }
    )
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, count in splits.items():
        labels = [i % 2 for i in range(count)]
        images = [Image.new("RGB", (24, 24), (200, 30, 30) if y else (30, 30, 200)) for y in labels]
        captions = [f"a {'dog' if y else 'cat'} photo {i}" for i, y in enumerate(labels)]
        table = datasets.Dataset.from_dict(
            {"img": images, "caption": captions, "label": labels}, features=features
        )
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


MMIMDB_SPLITS = {"train": 8, "dev": 4, "test": 4}


def _mmimdb_genres(split: str, i: int) -> list[str]:
    # News, Reality-TV: not among the 23; MMBT drops movies tagged News, and dev/test movies
    # with a genre (here Reality-TV) that no training movie has.
    if i == 2:
        return ["Documentary", "News"]
    if split == "test" and i == 3:
        return ["Comedy", "Reality-TV"]
    return ["Drama", "Comedy"] if i % 2 else ["Horror"]


def write_mmimdb(root: Path, splits: dict[str, int] = MMIMDB_SPLITS) -> Path:
    """``split.json`` and ``dataset/<id>.{jpeg,json}`` as in the MM-IMDb release.

    Most movies have several plot summaries, as in the release, and the longest is not the
    first: ``plot of movie <id> ...`` is the longest, ``first summary`` the first.
    """
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    split_ids: dict[str, list[str]] = {}
    movie = 100000
    for split, count in splits.items():
        split_ids[split] = []
        for i in range(count):
            movie += 1
            movie_id = f"0{movie}"
            genres = _mmimdb_genres(split, i)
            # Drama/Comedy posters are yellow, Horror ones dark (a signal to learn); the blue
            # channel tells the movies apart.
            colour = (200, 200, row_shade(movie)) if i % 2 else (20, 20, row_shade(movie))
            Image.new("RGB", (30, 44), colour).save(
                root / "dataset" / f"{movie_id}.jpeg", quality=100
            )
            longest = f"plot of movie {movie_id}, a {genres[0].lower()} told at some length"
            plots = [longest] if i % 3 == 0 else ["first summary", longest, "a middle one"]
            info = {"title": f"Movie {movie_id}", "genres": genres, "plot": plots}
            (root / "dataset" / f"{movie_id}.json").write_text(json.dumps(info))
            split_ids[split].append(movie_id)
    (root / "split.json").write_text(json.dumps(split_ids))
    return root
