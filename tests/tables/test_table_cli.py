"""mmexp-table on run folders made by really running a tiny sweep."""

import csv

import pytest
from PIL import Image

from mmexp.fusion.cost import count_params
from mmexp.lit.heads import MLPHead
from mmexp.tables.cli import main
from mmexp.tables.collect import collect_local
from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES
from tests.helpers.run_folders import write_run_folder


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    run_cli(
        "train",
        f"hydra.sweep.dir={root}",
        f"paths.data_dir={root / 'data'}",
        "trainer.max_epochs=1",
        "data.num_train=96",
        "data.num_val=48",
        "data.num_test=48",
        "test=true",
        "data.modalities=[image],[text]",
        "data.task=redundant,unique_text",
        "seed=1,2",
        cwd=root,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
        timeout=900,
    )
    return root


def test_sweep_runs_are_collected_with_their_axes(sweep_dir):
    runs = collect_local([sweep_dir])
    assert len(runs) == 8
    assert {run.axis("data.modalities") for run in runs} == {"image", "text"}
    assert {run.choices["data"] for run in runs} == {"shapes"}
    assert all(run.status == "completed" for run in runs)


def test_table_cli_writes_all_formats_with_n_per_cell(sweep_dir, tmp_path, capsys):
    out = tmp_path / "tables" / "modalities"
    assert (
        main(
            [
                str(sweep_dir),
                "--rows",
                "data.modalities",
                "--cols",
                "data.task",
                "--baseline",
                "image",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| data.modalities | redundant | unique_text |" in printed
    with out.with_suffix(".csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(row["n"] == "2" for row in rows)
    runs = collect_local([sweep_dir])
    text_unique = [
        r.metrics["test/acc"]
        for r in runs
        if r.axis("data.modalities") == "text" and r.axis("data.task") == "unique_text"
    ]
    cell = next(
        row
        for row in rows
        if row["data.modalities"] == "text" and row["data.task"] == "unique_text"
    )
    assert float(cell["mean"]) == pytest.approx(sum(text_unique) / 2)
    assert r"\begin{tabular}{lcc}" in out.with_suffix(".tex").read_text()
    with Image.open(out.with_suffix(".png")) as image:
        assert image.size[0] > 300 and image.size[1] > 200


def test_table_cli_params_column_shows_trainable_fusion_and_head_parameters(
    sweep_dir, tmp_path, capsys
):
    out = tmp_path / "params"
    assert (
        main(
            [
                str(sweep_dir),
                "--rows",
                "data.modalities",
                "--cols",
                "data.task",
                "--params",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    # One modality through concat: the fusion has no weights, the head is model.head on 128.
    expected = count_params(MLPHead(128, 3, (256,)))
    assert "| data.modalities | params | redundant | unique_text |" in printed
    assert f"| image | {expected:,} |" in printed and f"| text | {expected:,} |" in printed
    assert "params: trainable parameters of fusion + head" in printed
    assert r"\begin{tabular}{lrcc}" in out.with_suffix(".tex").read_text()
    with out.with_suffix(".csv").open() as handle:
        assert {row["params"] for row in csv.DictReader(handle)} == {str(expected)}


def test_table_cli_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="runs folder not found"):
        main([str(tmp_path / "missing"), "--rows", "fusion"])
    with pytest.raises(FileNotFoundError, match="no results.json below"):
        main([str(tmp_path), "--rows", "fusion"])


def test_pruned_optuna_trials_are_left_out_and_counted(tmp_path, capsys):
    trials = [("a", "completed", 0.9), ("b", "completed", 0.7), ("c", "pruned", 0.4)]
    for seed, (name, status, acc) in enumerate(trials, start=1):
        write_run_folder(tmp_path / "sweep" / name, "concat", seed, {"test/acc": acc}, {}, status)
    out = tmp_path / "table"
    assert main([str(tmp_path / "sweep"), "--rows", "fusion", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # the pruned trial's 0.4 is neither in the mean (0.8) nor counted as a failure (no †)
    assert "| concat | **80.00 ± 14.14 (2)** |" in printed
    assert "written from 2 runs (1 pruned Optuna trials left out)" in printed
