"""A video + text manifest data set (mp4, avi and flv files) trains through the CLI config."""

from __future__ import annotations

import json

from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.video_files import write_video

SUFFIXES = ("mp4", "avi", "flv")


def write_video_manifest(root, per_split: dict[str, int]) -> None:
    rows = []
    for split, count in per_split.items():
        for i in range(count):
            label = ("red", "blue")[i % 2]
            path = f"clips/{split}{i}.{SUFFIXES[i % 3]}"
            write_video(root / path, num_frames=6 + i % 5, colour=0 if label == "red" else 2)
            rows.append(
                {
                    "id": f"{split}{i}",
                    "split": split,
                    "video": path,
                    "text": "a clip",
                    "label": label,
                }
            )
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_video_classifier_learns_the_clips_colour(tmp_path, data_dir):
    root = tmp_path / "data"
    write_video_manifest(root, {"train": 24, "val": 8, "test": 8})
    fast = [o for o in FAST_OVERRIDES if not o.startswith(("data.", "trainer.max_epochs"))]
    overrides = [
        *fast,
        "data=manifest",
        f"data.root={root}",
        "data.modalities=[video,text]",
        "+model/encoders/video=frames",
        "model.encoders.video.sampler.num_frames=3",
        "model.encoders.video.sampler.strategy=segment",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.batch_size=8",
        "trainer.max_epochs=6",
    ]
    result = train(compose_config("train", overrides, tmp_path / "run", data_dir))
    # the text is the same for every clip: only the video tells red from blue
    assert result["metrics"]["test/acc"] == 1.0
