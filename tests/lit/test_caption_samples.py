"""The captions of a test, written beside the run and logged as a table with their images."""

import json
from types import SimpleNamespace

import wandb
from PIL import Image

from mmexp.lit.caption_samples import CaptionSamples


class TableLogger:
    """A logger that takes tables, as W&B's does."""

    def __init__(self):
        self.tables = []

    def log_table(self, key, columns, data):
        self.tables.append((key, columns, data))


def test_generations_are_written_and_the_first_logged_with_images(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    rows = [{"image": "a.png"}, {"image": "missing.png"}, {"image": "a.png"}]
    dataset = SimpleNamespace(rows=rows, root=tmp_path, columns={"image": "image"})
    logger = TableLogger()
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(datasets={"test": dataset}), loggers=[logger]
    )
    generations = [
        {"id": i, "references": [f"ref {i}", "other"], "prediction": f"pred {i}"} for i in range(3)
    ]
    module = SimpleNamespace(test_generations=generations)
    CaptionSamples(str(tmp_path / "captions"), logged=2).on_test_end(trainer, module)
    written = [json.loads(line) for line in (tmp_path / "captions" / "test.jsonl").open()]
    assert [row["prediction"] for row in written] == ["pred 0", "pred 1", "pred 2"]
    assert written[0]["image"] == str(tmp_path / "a.png") and written[1]["image"] is None
    ((key, columns, data),) = logger.tables
    assert key == "test/captions" and columns == ["id", "image", "references", "prediction"]
    assert len(data) == 2 and isinstance(data[0][1], wandb.Image) and data[1][1] is None
    assert data[0][2] == "ref 0 | other" and data[0][3] == "pred 0"


def test_modules_without_generations_write_nothing(tmp_path):
    trainer = SimpleNamespace(datamodule=None, loggers=[TableLogger()])
    CaptionSamples(str(tmp_path / "captions")).on_test_end(trainer, SimpleNamespace())
    assert not (tmp_path / "captions").exists()
