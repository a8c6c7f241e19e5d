"""``mmexp-table --wandb ENTITY/PROJECT --group STUDY`` on runs that really logged to W&B.

Real training runs log offline; their ``.wandb`` files are read back and served through a
stand-in for ``wandb.Api`` that answers as the service would (each run's config, final
summary and state, filtered by group). The table built that way must equal the one built
from the same runs' folders, so what a run logs to W&B is enough for its paper table.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmexp.tables.cli import main as table
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.wandb_offline import read_offline_run

RUNS = [("concat", 1), ("concat", 2), ("late", 1), ("late", 2)]


class OfflineRunsApi:
    """``wandb.Api`` over offline run folders: ``runs(path, filters)`` as the service."""

    def __init__(self, folders: list[Path]) -> None:
        self.runs_read = [read_offline_run(next(f.glob("wandb/offline-run-*"))) for f in folders]
        self.asked: list[tuple[str, dict]] = []

    def runs(self, path: str, filters: dict) -> list[SimpleNamespace]:
        self.asked.append((path, filters))
        return [
            SimpleNamespace(
                id=logged["run"]["id"],
                state="finished",
                config=logged["config"],
                summary=logged["summary"],
            )
            for logged in self.runs_read
            if logged["run"]["group"] == filters.get("group", logged["run"]["group"])
        ]


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory, data_dir) -> list[Path]:
    root = tmp_path_factory.mktemp("study")
    folders = []
    for fusion, seed in RUNS:
        folder = root / f"{fusion}_{seed}"
        overrides = [*FAST_OVERRIDES, "trainer.max_epochs=3", "logger=wandb"]
        overrides += ["logger.wandb.mode=offline", "study=wandb_table", f"fusion={fusion}"]
        train(compose_config("train", [*overrides, f"seed={seed}"], folder, data_dir))
        folders.append(folder)
    return folders


def cells(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_table_from_wandb_equals_the_table_from_the_run_folders(
    run_folders, tmp_path, monkeypatch
):
    import wandb

    api = OfflineRunsApi(run_folders)
    assert {logged["run"]["group"] for logged in api.runs_read} == {"wandb_table"}
    monkeypatch.setattr(wandb, "Api", lambda: api)
    shared = ["--rows", "fusion", "--cols", "data.task", "--baseline", "concat"]
    from_wandb, from_folders = tmp_path / "wandb" / "t", tmp_path / "local" / "t"
    argv = ["--wandb", "team/mmexp", "--group", "wandb_table", *shared]
    assert table([*argv, "--out", str(from_wandb)]) == 0
    assert api.asked == [("team/mmexp", {"group": "wandb_table"})]
    assert table([*map(str, run_folders), *shared, "--out", str(from_folders)]) == 0
    wandb_cells = cells(from_wandb.with_suffix(".csv"))
    assert wandb_cells == cells(from_folders.with_suffix(".csv"))
    assert sorted(row[next(iter(row))] for row in wandb_cells) == ["concat", "late"]
    # Every seed of each cell came through W&B, each with its own run's value.
    seeds = cells(from_wandb.parent / f"{from_wandb.name}_seeds.csv")
    assert seeds == cells(from_folders.parent / f"{from_folders.name}_seeds.csv")
    assert sorted((row["fusion"], int(row["seed"])) for row in seeds) == sorted(RUNS)
    # The runs differ, so a value read from the wrong run would show above.
    assert len({row["value"] for row in seeds}) > 1, seeds
