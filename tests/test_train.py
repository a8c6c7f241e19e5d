"""Training end to end: in-process runs, the CLI, the run folder and reproducibility."""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from mmexp.eval import evaluate
from mmexp.train import train
from mmexp.utils.checkpoints import load_checkpoint
from tests.helpers.cli import cli_env, run_cli
from tests.helpers.configs import compose_config, fast_overrides
from tests.helpers.wandb_offline import read_offline_run

REPO = Path(__file__).resolve().parents[1]


def checkout_head() -> str | None:
    """``git rev-parse HEAD`` of the checkout these tests are in, or None."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except OSError:  # no git
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def test_train_writes_a_complete_run_record(make_train_cfg):
    cfg = make_train_cfg()
    result = train(cfg)
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "results.json").read_text())
    assert saved["status"] == "completed" and saved == json.loads(json.dumps(result))
    assert saved["seed"] == 42
    # the commit of this checkout, whose code ran; None where it is no git checkout
    head = checkout_head()
    assert head is not None or not (REPO / ".git").exists(), "git rev-parse HEAD failed"
    assert saved["git"]["sha"] == head
    assert saved["packages"]["torch"] == torch.__version__.split("+")[0]
    for metric in ("val/acc", "val/acc_best", "val/f1_macro", "test/acc", "test/f1_macro"):
        assert 0.0 <= saved["metrics"][metric] <= 1.0, metric
    assert Path(saved["best_checkpoint"]).is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").read_text().count("${") == 0  # resolved
    csv_lines = (run / "csv" / "metrics.csv").read_text().splitlines()
    assert "val/acc" in csv_lines[0] and len(csv_lines) > 2
    with (run / "test_report" / "per_class_metrics.csv").open() as handle:
        per_class = list(csv.DictReader(handle))
    assert [row["class"] for row in per_class] == ["circle", "square", "triangle"]
    assert sum(int(row["support"]) for row in per_class) == cfg.data.num_test
    # accuracy is the support-weighted recall: the report and the logged metric agree
    correct = sum(float(row["recall"]) * int(row["support"]) for row in per_class)
    assert saved["metrics"]["test/acc"] == pytest.approx(correct / cfg.data.num_test)
    with Image.open(run / "test_report" / "confusion_matrix.png") as image:
        assert image.size[0] > 200


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_differs(make_train_cfg):
    first = train(make_train_cfg("seed=7", run_name="a"))["metrics"]
    second = train(make_train_cfg("seed=7", run_name="b"))["metrics"]
    other = train(make_train_cfg("seed=8", run_name="c"))["metrics"]
    assert first == second
    assert first["val/loss"] != other["val/loss"]


def test_checkpoint_is_weights_only_and_eval_reproduces_test_metrics(make_train_cfg, data_dir):
    cfg = make_train_cfg("test=true")
    result = train(cfg)
    checkpoint = load_checkpoint(result["best_checkpoint"])
    assert checkpoint["mmexp_config"]["data"]["task"] == cfg.data.task
    eval_dir = Path(cfg.paths.output_dir).parent / "eval"
    eval_cfg = compose_config(
        "eval",
        [f"ckpt_path={result['best_checkpoint']}", "trainer.accelerator=cpu", "callbacks=none"],
        eval_dir,
        data_dir,
    )
    evaluated = evaluate(eval_cfg)
    assert evaluated["metrics"]["test/acc"] == pytest.approx(result["metrics"]["test/acc"])
    assert json.loads((eval_dir / "results.json").read_text())["status"] == "completed"
    # the evaluated run's config beside the record, not as a config.yaml of another run
    rebuilt = yaml.safe_load((eval_dir / "run_config.yaml").read_text())
    assert rebuilt["eval_checkpoint"] == str(Path(result["best_checkpoint"]).resolve())
    assert not (eval_dir / "config.yaml").exists()


def test_eval_rejects_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "nope.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="not written by mmexp-train"):
        load_checkpoint(tmp_path / "foreign.ckpt")
    (tmp_path / "broken.ckpt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "broken.ckpt")


def test_failed_run_is_recorded_as_failed(make_train_cfg):
    cfg = make_train_cfg("monitor=val/nonexistent")
    with pytest.raises(KeyError, match="val/nonexistent"):
        train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert saved["status"] == "failed" and "val/nonexistent" in saved["error"]


def test_cli_trains_with_wandb_offline_and_prints_summary(tmp_path, data_dir):
    run_dir = tmp_path / "cli_run"
    completed = run_cli(
        "train",
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={data_dir}",
        "data.task=redundant",
        cwd=tmp_path,
        fast=fast_overrides(without=("logger",)),
        env={"WANDB_API_KEY": None},
    )
    assert "final metrics" in completed.stdout and "test/acc" in completed.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["git"]["sha"] == checkout_head()  # the process ran this checkout's code
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1
    logged = read_offline_run(wandb_runs[0])
    assert logged["config"]["data"]["task"] == "redundant"
    assert logged["config"]["run"]["git"]["sha"] == results["git"]["sha"]
    assert logged["config"]["run"]["packages"]["torch"] == results["packages"]["torch"]
    assert any("val/acc" in row for row in logged["history"])
    assert logged["summary"]["test/acc"] == pytest.approx(results["metrics"]["test/acc"])
    media = {key: value for row in logged["history"] for key, value in row.items()}
    assert media["test/confusion_matrix/_type"] == "images/separated"
    assert media["test/per_class/nrows"] == 3  # one row per class of the redundant task
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()


def test_eval_of_a_timm_run_does_not_refetch_pretrained_weights(make_train_cfg, data_dir):
    from tests.helpers.tiny_models import tiny_vit_backbone

    run_root = Path(make_train_cfg().paths.output_dir).parent
    weights = run_root / "vit_tiny.pth"
    torch.save(tiny_vit_backbone().state_dict(), weights)
    cfg = make_train_cfg(
        "model/encoders/image=timm",
        "model.encoders.image.name=vit_tiny_patch16_224",
        f"model.encoders.image.checkpoint_path={weights}",
        "model.encoders.image.img_size=32",
        "model.encoders.image.model_kwargs={depth: 2}",
        "trainer.max_epochs=1",
        run_name="vit",
    )
    result = train(cfg)
    weights.unlink()  # the pretrained file is gone: eval must use the checkpoint alone
    eval_cfg = compose_config(
        "eval",
        [f"ckpt_path={result['best_checkpoint']}", "trainer.accelerator=cpu", "callbacks=none"],
        run_root / "eval_vit",
        data_dir,
    )
    evaluated = evaluate(eval_cfg)
    assert evaluated["metrics"]["test/acc"] == pytest.approx(result["metrics"]["test/acc"])


def test_the_eval_console_script_reproduces_the_test_metrics(make_train_cfg, tmp_path):
    script = shutil.which("mmexp-eval")
    if script is None:
        pytest.skip("mmexp is not installed (pip install -e .): no console scripts")
    result = train(make_train_cfg("trainer.max_epochs=1"))
    eval_dir = tmp_path / "console_eval"
    done = subprocess.run(
        [script, f"ckpt_path={result['best_checkpoint']}", f"hydra.run.dir={eval_dir}"],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((eval_dir / "results.json").read_text())
    assert evaluated["metrics"]["test/acc"] == pytest.approx(result["metrics"]["test/acc"])
    assert "mmexp eval: test metrics" in done.stdout
