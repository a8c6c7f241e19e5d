"""A few samples of published data sets, written exactly in their release formats."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

HATEFUL_SPLITS = {"train": 8, "dev_seen": 4, "test_seen": 4}


def write_hateful_memes(root: Path, splits: dict[str, int] = HATEFUL_SPLITS) -> Path:
    """``img/<id>.png`` and ``<split>.jsonl`` as in the Hateful Memes release."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    next_id = 10000
    for split, count in splits.items():
        lines = []
        for i in range(count):
            meme_id = next_id = next_id + 1
            label = i % 2
            # Hateful memes are red here, so there is something to learn.
            colour = (200, 30, 30) if label else (30, 30, 200)
            Image.new("RGB", (48, 40), colour).save(root / "img" / f"{meme_id:05d}.png")
            lines.append({"id": meme_id, "img": f"img/{meme_id:05d}.png", "label": label,
                          "text": f"caption of meme {meme_id}"})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root
