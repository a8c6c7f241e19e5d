"""mmexp-table on faked run folders with results.json + config.yaml + analysis.json."""

import csv
import json
import logging

import pytest
from PIL import Image

from mmexp.tables.analysis import analysis_columns, short_label
from mmexp.tables.cli import main
from mmexp.tables.collect import collect_local, read_run_folder
from tests.helpers.analysis_runs import make_analysis, write_run

# (fusion, seed, task): accuracy, Shapley values (image, text), EMAP gap, model PID, data PID
RUNS = {
    ("concat", 1, "synergy"): (
        0.9,
        (0.2, 0.2),
        0.4,
        (0.01, (0.0, 0.02), 0.8),
        (0.0, (0.0, 0.1), 0.5),
    ),
    ("concat", 2, "synergy"): (
        0.8,
        (0.1, 0.2),
        0.3,
        (0.03, (0.02, 0.0), 0.6),
        (0.0, (0.1, 0.0), 0.7),
    ),
    ("late", 1, "synergy"): (0.5, (0.0, 0.0), 0.0, (0.1, (0.3, 0.0), 0.1), (0.0, (0.0, 0.0), 0.6)),
    ("late", 2, "synergy"): (0.6, (0.1, 0.0), 0.0, (0.1, (0.5, 0.0), 0.1), (0.0, (0.0, 0.0), 0.6)),
    ("concat", 1, "redundant"): (
        0.95,
        (0.3, 0.3),
        0.0,
        (0.9, (0.1, 0.1), 0.1),
        (0.8, (0.2, 0.2), 0.1),
    ),
}


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "multirun"
    for index, ((fusion, seed, task), values) in enumerate(RUNS.items()):
        acc, (image, text), gap, model, data = values
        payload = make_analysis(acc, {"image": image, "text": text}, gap, model, data, seed=seed)
        write_run(root, str(index), fusion, seed, payload, task=task)
    write_run(root, "failed", "late", 3, task="synergy", status="failed")
    return root


def read_csv(path):
    with path.open() as handle:
        return {(row[next(iter(row))], row["metric"]): row for row in csv.DictReader(handle)}


def test_analysis_json_joins_the_metrics_under_flat_keys(runs_dir, tmp_path, caplog):
    run = read_run_folder(runs_dir / "0")
    assert run.metrics["test/acc"] == 0.9 and run.analysis["components"]["emap"]["gap"] == 0.4
    assert run.metrics["analysis/contribution/shapley/text"] == 0.2
    assert run.metrics["analysis/emap/gap"] == 0.4
    assert run.metrics["analysis/pid/model/synergy"] == 0.8
    assert run.metrics["analysis/pid/data/unique_text"] == 0.1
    assert run.metrics["analysis/contribution/subsets/image+text/acc"] == 0.9
    assert "analysis/pid/model/status" not in run.metrics  # strings are not numbers
    broken = write_run(tmp_path / "broken", "run", "concat", 1)
    (broken / "analysis.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        (run,) = collect_local([tmp_path / "broken"])
    assert run.analysis == {} and set(run.metrics) == {"test/acc"}
    assert "skipping unreadable" in caplog.text


def test_an_analysis_key_as_the_metric_of_an_ordinary_table(runs_dir, tmp_path, capsys):
    out = tmp_path / "gap"
    argv = [str(runs_dir), "--rows", "fusion", "--cols", "data.task", "--out", str(out)]
    assert main([*argv, "--metric", "analysis/emap/gap"]) == 0
    printed = capsys.readouterr().out
    assert "| fusion | redundant | synergy |" in printed
    assert "| concat | **0.00 ± 0.00 (1)** | **35.00 ± 7.07 (2)** |" in printed
    assert "| late | -- | 0.00 ± 0.00 (2)† |" in printed  # the failed seed 3 counted


def test_accuracy_emap_gap_and_pid_atoms_side_by_side(runs_dir, tmp_path, capsys):
    out = tmp_path / "tables" / "interactions"
    argv = [str(runs_dir), "--rows", "data.task,fusion", "--scale", "1", "--digits", "3"]
    assert main([*argv, "--analysis", "test/acc", "emap/gap", "pid/model", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    header = "| data.task,fusion | test/acc | EMAP gap | R model | U_image model | U_text model |"
    assert header + " S model |" in printed
    assert (
        "| synergy / concat | 0.850 ± 0.071 (2) | **0.350 ± 0.071 (2)** | 0.020 ± 0.014 (2) |"
        in printed
    )
    assert "analysis: mean ± std over seeds" in printed
    rows = read_csv(out.with_suffix(".csv"))
    assert float(
        rows[("synergy / late", "analysis/pid/model/unique_image")]["mean"]
    ) == pytest.approx(0.4)
    assert float(rows[("synergy / late", "test/acc")]["mean"]) == pytest.approx(0.55)
    assert rows[("synergy / late", "analysis/emap/gap")]["failed"] == "1"
    assert float(rows[("redundant / concat", "analysis/pid/model/redundancy")]["mean"]) == 0.9
    assert "U\\_image model" in out.with_suffix(".tex").read_text()


def test_groups_expand_and_labels_are_short(runs_dir):
    runs = collect_local([runs_dir])
    columns = analysis_columns(
        runs, ["contribution/shapley", "analysis/pid/data", "emap/emap_accuracy"]
    )
    assert columns == [
        ("shapley:image", "analysis/contribution/shapley/image"),
        ("shapley:text", "analysis/contribution/shapley/text"),
        ("R data", "analysis/pid/data/redundancy"),
        ("U_image data", "analysis/pid/data/unique_image"),
        ("U_text data", "analysis/pid/data/unique_text"),
        ("S data", "analysis/pid/data/synergy"),
        ("EMAP acc", "analysis/emap/emap_accuracy"),
    ]
    assert short_label("analysis/pid/model/total") == "I model"
    assert short_label("analysis/contribution/subsets/text/acc") == "text:acc"
    assert short_label("analysis/contribution/per_sample/shares/image") == "share:image"
    assert short_label("analysis/contribution/drop/text") == "drop:text"
    assert short_label("analysis/emap/pairs") == "emap/pairs"


def test_keys_no_run_has_and_options_that_collide(runs_dir, tmp_path):
    with pytest.raises(ValueError, match=r"'emap/gapp'; known: \['contribution', "):
        main([str(runs_dir), "--rows", "fusion", "--analysis", "emap/gapp"])
    for extra in (["--cols", "seed"], ["--robustness", "clean"]):
        with pytest.raises(SystemExit):
            main([str(runs_dir), "--rows", "fusion", "--analysis", "emap/gap", *extra])


def test_analysis_plots_are_written_beside_the_table(runs_dir, tmp_path, capsys):
    out = tmp_path / "plots" / "table"
    # concat seed 1 ran on both tasks: the task is part of the row
    rows = ["--rows", "data.task,fusion"]
    assert main([str(runs_dir), *rows, "--analysis-plots", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("shapley", "pid_model", "pid_data", "emap"):
        path = out.with_name(f"table_{name}.png")
        assert f"  {path}\n" in printed
        with Image.open(path) as image:
            assert image.format == "PNG"
        assert path.with_suffix(".pdf").read_bytes().startswith(b"%PDF")


def test_plots_of_what_the_runs_have_and_a_note_for_the_rest(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(
        root, "0", "concat", 1, make_analysis(0.9, {"image": 0.2, "text": 0.2}, 0.4, None, None)
    )
    out = tmp_path / "partial"
    assert main([str(root), "--rows", "fusion", "--analysis-plots", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no analysis results for: pid_model, pid_data" in printed
    assert (
        out.with_name("partial_emap.png").is_file()
        and not out.with_name("partial_pid_data.png").exists()
    )
    bare = tmp_path / "bare"
    write_run(bare, "0", "concat", 1)
    with pytest.raises(ValueError, match="no completed run has analysis results to plot"):
        main([str(bare), "--rows", "fusion", "--analysis-plots", "--out", str(tmp_path / "x")])
    assert json.loads((bare / "0" / "results.json").read_text())["status"] == "completed"


def test_atoms_of_modalities_a_run_does_not_have_are_not_failures(tmp_path, capsys):
    root = tmp_path / "runs"
    audio = ("image", "audio")
    synergy = make_analysis(
        0.9, {"image": 0.2, "audio": 0.2}, 0.4, (0, (0, 0), 0.8), (0, (0, 0), 0.5), audio
    )
    write_run(root, "0", "concat", 1, synergy, modalities=audio)
    unique = make_analysis(
        0.9, {"image": 0.0, "text": 0.6}, 0.0, (0, (0, 0.9), 0), (0, (0, 0.8), 0)
    )
    write_run(root, "1", "concat", 1, unique, task="unique_text")
    write_run(root, "2", "concat", 2, task="unique_text")  # completed, never analysed
    argv = [str(root), "--rows", "data.task,fusion", "--scale", "1", "--out", str(tmp_path / "t")]
    assert main([*argv, "--analysis", "test/acc", "pid/model"]) == 0
    printed = capsys.readouterr().out
    assert "| R model | U_audio model | U_image model | U_text model | S model |" in printed
    bold = "**0.00 ± 0.00 (1)**"
    assert f"| synergy / concat | **0.90 ± 0.00 (1)** | {bold} | {bold} | {bold} | -- |" in printed
    # seeds at 0.5 and 0.9: split into two groups (§)
    assert f"| unique_text / concat | 0.70 ± 0.28 (2)§ | {bold} | -- | {bold} |" in printed
    assert "failed" not in printed.split("analysis: mean")[0]
