"""mmexp-table on faked run folders with results.json + config.yaml + robustness.json."""

import csv

import pytest
from PIL import Image

from mmexp.tables.cli import curve_path, main
from tests.helpers.robustness_runs import make_payload, write_run

# (fusion, seed): clean acc, acc with only the image, acc with text missing at 0.5 and 1.
RUNS = {
    ("concat", 1): (0.9, 0.7, 0.8, 0.6),
    ("concat", 2): (0.8, 0.6, 0.7, 0.4),
    ("late", 1): (0.8, 0.5, 0.6, 0.2),
    ("late", 2): (0.7, 0.5, 0.6, 0.5),
}


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "multirun"
    for index, ((fusion, seed), (clean, image, half, full)) in enumerate(RUNS.items()):
        payload = make_payload(
            clean, subsets={"image": image}, missing={"text": {0.5: half, 1.0: full}}, seed=seed
        )
        write_run(root, str(index), fusion, seed, payload)
    write_run(root, "failed", "late", 3, status="failed")
    return root


def read_csv(path):
    with path.open() as handle:
        return {(row["fusion"], row["metric"]): row for row in csv.DictReader(handle)}


def test_conditions_curves_and_summaries_side_by_side(runs_dir, tmp_path, capsys):
    out = tmp_path / "tables" / "robustness"
    argv = [str(runs_dir), "--rows", "fusion", "--out", str(out), "--robustness"]
    argv += ["clean", "subset:image", "missing:text", "RR/missing:text", "ER/missing:text"]
    assert main([*argv, "--er-baseline", "late", "--robustness-curve", "missing:text"]) == 0
    printed = capsys.readouterr().out
    header = "| fusion | clean | subset:image | missing:text@0.5 | missing:text@1.0 |"
    assert header + " RR/missing:text | ER/missing:text |" in printed
    assert "| concat | **85.00 ± 7.07 (2)** | **65.00 ± 7.07 (2)** |" in printed
    assert "acc by robustness condition (x100)" in printed
    rows = read_csv(out.with_suffix(".csv"))
    concat_rr = rows[("concat", "robust/RR/missing:text")]
    assert float(concat_rr["mean"]) == pytest.approx((0.775 + 0.65) / 2)
    # Against late fusion of the same seed: 0.125 (seed 1) and -0.05 (seed 2); late: 0.
    assert float(rows[("concat", "robust/ER/missing:text")]["mean"]) == pytest.approx(0.0375)
    assert float(rows[("late", "robust/ER/missing:text")]["mean"]) == pytest.approx(0.0)
    assert rows[("late", "robust/clean/acc")]["failed"] == "1"
    assert float(rows[("late", "robust/missing:text@1.0/acc")]["mean"]) == pytest.approx(0.35)
    curve = curve_path(out, "missing:text")
    assert curve.name == "robustness_curve_missing-text.png"
    with Image.open(curve) as image:
        assert image.format == "PNG"
    assert f"  {curve}\n" in printed
    assert curve.with_suffix(".pdf").read_bytes().startswith(b"%PDF")


def test_a_robustness_key_as_the_single_metric_keeps_the_ordinary_table(runs_dir, tmp_path, capsys):
    out = tmp_path / "single"
    argv = [str(runs_dir), "--rows", "fusion", "--cols", "data.task", "--out", str(out)]
    assert main([*argv, "--metric", "robust/subset:image/acc", "--baseline", "late"]) == 0
    printed = capsys.readouterr().out
    assert "| fusion | redundant |" in printed
    assert "| concat | **65.00 ± 7.07 (2)** |" in printed
    assert "robust/subset:image/acc (x100)" in printed


def test_min_metrics_and_conditions_named_wrong(runs_dir, tmp_path, capsys):
    out = tmp_path / "loss"
    argv = [str(runs_dir), "--rows", "fusion", "--metric", "test/loss", "--mode", "min"]
    assert main([*argv, "--robustness", "subset:image", "--out", str(out)]) == 0
    assert "| concat | **35.00 ± 7.07 (2)** |" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"'subset:audio' \(acc\); known conditions: \['clean'"):
        main([str(runs_dir), "--rows", "fusion", "--robustness", "subset:audio"])
    with pytest.raises(SystemExit):
        main([str(runs_dir), "--rows", "fusion", "--cols", "seed", "--robustness", "clean"])
    with pytest.raises(ValueError, match="no completed run of fusion='x' has a robustness.json"):
        main([str(runs_dir), "--rows", "fusion", "--robustness", "clean", "--er-baseline", "x"])
