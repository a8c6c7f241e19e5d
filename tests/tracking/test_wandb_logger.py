"""W&B must never stop training: failures fall back to offline, then disabled."""

import json
from pathlib import Path

import wandb

from mmexp.train import train
from tests.helpers.wandb_offline import read_offline_run


def test_online_init_failure_falls_back_to_offline_and_training_completes(
    make_train_cfg, monkeypatch
):
    real_init = wandb.init

    def flaky_init(*args, **kwargs):
        if kwargs.get("mode") == "online":
            raise TimeoutError("init timed out after 90 s")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", flaky_init)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = make_train_cfg("logger=many", "logger.wandb.mode=online", "seed=5", "tags=[ablation]")
    result = train(cfg)
    assert result["status"] == "completed"
    (note,) = result["tracking_fallbacks"]
    assert "init timed out" in note and "wandb sync" in note
    run_dir = Path(cfg.paths.output_dir)
    offline = next((run_dir / "wandb").glob("offline-run-*"))
    logged = read_offline_run(offline)
    assert logged["run"]["name"] == "concat shapes/redundant image:cnn+text:transformer s5"
    assert {"ablation", "fusion:concat", "seed:5"} <= set(logged["run"]["tags"])
    assert logged["run"]["group"] == "train" and logged["run"]["job_type"] == "train"
    assert json.loads((run_dir / "results.json").read_text())["tracking_fallbacks"] == [note]


def test_when_wandb_cannot_start_at_all_logging_is_disabled_not_fatal(make_train_cfg, monkeypatch):
    real_init = wandb.init

    def broken_init(*args, **kwargs):
        if kwargs.get("mode") != "disabled":
            raise ConnectionError("service unreachable")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = make_train_cfg("logger=many", "logger.wandb.mode=offline")
    result = train(cfg)
    assert result["status"] == "completed"
    assert "disabled" in result["tracking_fallbacks"][0]
    assert (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").is_file()


def test_log_model_uploads_best_and_last_checkpoints_as_model_artifacts(
    make_train_cfg, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_train_cfg("logger=many", "logger.wandb.log_model=true")
    assert train(cfg)["status"] == "completed"
    offline = next((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    models = [a for a in read_offline_run(offline)["artifacts"] if a["type"] == "model"]
    assert models and all(a["files"] == ["model.ckpt"] for a in models)
    assert {"best", "latest"} <= {alias for a in models for alias in a["aliases"]}


def test_an_unset_anonymous_setting_is_not_passed_to_wandb(tmp_path, monkeypatch):
    # W&B warns that the setting has no effect whenever it is passed, even as None.
    import wandb

    from mmexp.tracking.wandb_logger import ResilientWandbLogger

    arguments = []

    class Run:
        id = "run00001"

    def init(**options):
        arguments.append(options)
        return Run()

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "run", None)
    ResilientWandbLogger(save_dir=str(tmp_path), offline=True).experiment  # noqa: B018
    assert len(arguments) == 1 and "anonymous" not in arguments[0]
    ResilientWandbLogger(save_dir=str(tmp_path), anonymous=True).experiment  # noqa: B018
    assert arguments[1]["anonymous"] == "allow"  # asked for: passed on
