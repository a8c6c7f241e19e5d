"""Build a small user data set on disk in the manifest format: PNG, WAV, JSONL/CSV/Parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mmexp.data.audio_io import write_wav


def write_manifest_dataset(root: Path, rows_per_split: int = 4, fmt: str = "jsonl") -> Path:
    """Write images, audio clips and a manifest with labels ``cat``/``dog``; returns root."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    rows = []
    for split in ("train", "val", "test"):
        for i in range(rows_per_split):
            name = f"{split}{i}"
            colour = (255, 0, 0) if i % 2 else (0, 0, 255)
            Image.new("RGB", (20, 20), colour).save(root / "img" / f"{name}.png")
            write_wav(root / "wav" / f"{name}.wav", np.zeros(800, np.float32), 8000)
            rows.append(
                {
                    "id": name,
                    "split": split,
                    "picture": f"img/{name}.png",
                    "caption": f"sample {name}",
                    "audio": f"wav/{name}.wav",
                    "label": "dog" if i % 2 else "cat",
                }
            )
    if fmt == "jsonl":
        with (root / "manifest.jsonl").open("w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), root / "manifest.parquet")
    else:
        with (root / "manifest.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root
