"""experiment=robustness_ablation and experiment=missing_modality: what they run and score.

Each experiment file documents its commands in its header comment; those commands are read
back from the file and composed here, so a comment that drifts from the configs fails.
"""

import fnmatch
import itertools
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmexp.builders import build_module
from mmexp.config_check import check_config
from mmexp.robustness.conditions import build_grid
from mmexp.tables.cli import main as table_main
from mmexp.train import train
from mmexp.utils.resolvers import job_dir_name, register_resolvers
from tests.helpers.cli import run_cli
from tests.helpers.configs import CONF, CONF_DIR, FAST_OVERRIDES, compose_config
from tests.helpers.experiment_files import documented_commands, sweep
from tests.helpers.published_fixtures import write_hateful_memes

RATES = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"]
PUBLISHED = ["food101", "mmimdb", "hateful_memes"]


def train_overrides(command: list[str]) -> list[str]:
    """A documented ``mmexp-train -m`` command as overrides (without the sweep folder)."""
    assert command[:2] == ["mmexp-train", "-m"], command
    return [arg for arg in command[2:] if not arg.startswith("hydra.sweep.dir=")]


def grid_names(cfg) -> list[str]:
    return [c.name for c in build_grid(cfg.robustness, list(cfg.data.modalities))]


# --- robustness_ablation ---------------------------------------------------------------


def test_the_ablation_sweeps_strategy_dropout_and_seed(tmp_path, data_dir):
    mode, params = sweep(["experiment=robustness_ablation"])
    assert mode == "RunMode.MULTIRUN"
    fusions = params["fusion"].split(",")
    assert {"concat", "product", "late", "gated", "attention", "tensor", "low_rank"} <= set(fusions)
    assert params["model.modality_dropout"] == "0.0,0.3,0.5"
    assert params["seed"] == "1,2,3,4,5"
    cfg = compose_config("train", ["experiment=robustness_ablation"], tmp_path / "run", data_dir)
    assert (cfg.study, cfg.task_name, cfg.data.task) == (
        "robustness_ablation",
        "robustness_ablation",
        "redundant",
    )
    assert list(cfg.data.modalities) == ["image", "text"]
    # Every run is scored on each subset and each modality at each missing rate.
    assert cfg.robustness.name == "missing"
    expected = ["clean", "subset:image", "subset:text"]
    expected += [f"missing:{m}@{rate}" for m in ("image", "text") for rate in RATES]
    assert grid_names(cfg) == expected
    check_config(cfg)


@pytest.mark.parametrize("dropout", ["0.0", "0.5"])
def test_every_job_of_the_ablation_validates_and_builds(tmp_path, data_dir, dropout):
    _, params = sweep(["experiment=robustness_ablation"])
    for fusion in params["fusion"].split(","):
        overrides = ["experiment=robustness_ablation", f"fusion={fusion}"]
        overrides.append(f"model.modality_dropout={dropout}")
        cfg = compose_config("train", overrides, tmp_path / fusion, data_dir)
        check_config(cfg)
        module = build_module(cfg, num_classes=3)
        if dropout == "0.0":  # 0 is off, as null is: nothing is dropped
            assert module.modality_dropout is None, fusion
        else:
            assert module.modality_dropout.rate("text") == 0.5, fusion


def job_folder(overrides: list[str]) -> str:
    """The folder name of a multirun job with ``overrides`` (conf/hydra/default.yaml)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    return job_dir_name(cfg.hydra.job.override_dirname)


def test_the_ablation_documents_its_run_and_table_commands():
    runs = documented_commands("robustness_ablation", "mmexp-train")
    sweep_dir = "outputs/robustness_ablation"
    assert runs[0] == [
        "mmexp-train",
        "-m",
        "experiment=robustness_ablation",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    # the unimodal references: jobs of their own in the same sweep folder
    assert runs[1][-1] == f"hydra.sweep.dir={sweep_dir}"
    references = train_overrides(runs[1])
    assert "fusion=unimodal_image,unimodal_text" in references
    assert "model.modality_dropout=0.0" in references
    _, params = sweep(["experiment=robustness_ablation"])
    # Job folders are named by their sorted overrides (checked on one job), so the
    # documented globs pick the jobs they say: one dropout rate, or one strategy.
    one = ["experiment=robustness_ablation", "seed=1", "fusion=gated", "model.modality_dropout=0.3"]
    assert job_folder(one) == ",".join(sorted(one))
    jobs = {
        ",".join(sorted(["experiment=robustness_ablation", *job])): job
        for job in itertools.product(
            *([f"{key}={value}" for value in values.split(",")] for key, values in params.items())
        )
    }
    assert len(jobs) == 135
    tables = documented_commands("robustness_ablation", "mmexp-table")
    assert len(tables) == 2 and all("--robustness" in table for table in tables)
    picked = []
    for table in tables:
        folder, pattern = table[1].rsplit("/", 1)
        assert folder == sweep_dir
        picked.append({tuple(jobs[name]) for name in fnmatch.filter(jobs, pattern)})
    assert picked[0] == {job for job in jobs.values() if "model.modality_dropout=0.0" in job}
    assert picked[1] == {job for job in jobs.values() if "fusion=concat" in job}
    assert len(picked[0]) == 45 and len(picked[1]) == 15


@pytest.mark.slow
def test_one_job_of_the_ablation_runs_and_tabulates(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    run_cli(
        "train",
        "experiment=robustness_ablation",
        "fusion=concat",
        "model.modality_dropout=0.5",
        "seed=1",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={data_dir}",
        cwd=tmp_path,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
    )
    written = sorted(sweep_dir.rglob("robustness.json"))
    assert len(written) == 1, "one job, one robustness.json"
    payload = json.loads(written[0].read_text())
    assert payload["grids"] == ["missing"] and payload["metric"] == "acc"
    assert len(payload["conditions"]) == 23
    assert payload["summary"]["relative_robustness"].keys() == {"missing:image", "missing:text"}
    record = json.loads((written[0].parent / "results.json").read_text())
    assert record["status"] == "completed" and record["robustness"]["conditions"] == 23
    config = OmegaConf.load(written[0].parent / "config.yaml")
    assert config.model.modality_dropout == 0.5 and config.study == "robustness_ablation"
    out = tmp_path / "table"
    assert (
        table_main(
            [
                str(sweep_dir),
                "--rows",
                "fusion",
                "--robustness",
                "clean",
                "subset:image",
                "subset:text",
                "RR/missing:text",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = out.with_suffix(".md").read_text()
    assert "subset:image" in table and "RR/missing:text" in table and "concat" in table


# --- missing_modality --------------------------------------------------------------------


def documented_runs() -> dict[str, list[str]]:
    """The documented mmexp-train command of each published data set, by data set."""
    runs = {}
    for command in documented_commands("missing_modality", "mmexp-train"):
        overrides = train_overrides(command)
        data = next(o.split("=", 1)[1] for o in overrides if o.startswith("data="))
        runs[data] = overrides
    return runs


def test_the_protocol_is_documented_for_each_published_data_set():
    runs = documented_runs()
    assert sorted(runs) == sorted(PUBLISHED)
    for name in PUBLISHED:
        # each is an image + text data set
        assert list(OmegaConf.load(CONF / "data" / f"{name}.yaml").modalities) == ["image", "text"]
    assert "objective=multilabel" in runs["mmimdb"] and "monitor=val/f1_macro" in runs["mmimdb"]
    assert "monitor=val/auroc" in runs["hateful_memes"]


@pytest.mark.parametrize("data", PUBLISHED)
def test_the_protocol_composes_and_validates_for_each_data_set(tmp_path, data_dir, data):
    overrides = documented_runs()[data]
    mode, params = sweep(overrides)
    assert mode == "RunMode.MULTIRUN"
    assert params == {"data.missing.case": "text,image,both", "seed": "1,2,3,4,5"}
    cfg = compose_config("train", overrides, tmp_path / "run", data_dir)
    check_config(cfg)
    assert cfg.study == "missing_modality" and list(cfg.data.modalities) == ["image", "text"]
    assert cfg.data._target_ == OmegaConf.load(CONF / "data" / f"{data}.yaml")._target_
    if data == "mmimdb":
        assert cfg.objective.module.loss._target_.endswith("MultilabelBCELoss")
    # Trained at eta = 70% in each case of the sweep (both: 35% each, no sample lacks both).
    expected = {
        "text": {"text": 0.7},
        "image": {"image": 0.7},
        "both": {"image": 0.35, "text": 0.35},
    }
    for case, rates in expected.items():
        job = compose_config("train", [*overrides, f"data.missing.case={case}"], tmp_path, data_dir)
        missing = instantiate(job.data.missing)
        assert missing.rates == pytest.approx(rates) and missing.exclusive
        assert missing.splits == ("train", "val", "test")
    # Scored under every case at every test rate, and with each modality removed.
    assert cfg.robustness.name == "missing_cases"
    names = grid_names(cfg)
    for case in ("text", "image", "both"):
        assert [n for n in names if n.startswith(f"missing:{case}@")] == [
            f"missing:{case}@{rate}" for rate in RATES
        ]
    assert {"clean", "subset:image", "subset:text"} <= set(names)


def test_one_epoch_of_the_protocol_on_the_hateful_memes_release_format(tmp_path, data_dir):
    # Random ViT weights (no download); MiniLM comes from its package. About 5 s.
    root = write_hateful_memes(tmp_path / "hm")
    overrides = [
        *(o for o in FAST_OVERRIDES if not o.startswith("data.")),
        *(o for o in documented_runs()["hateful_memes"] if not o.startswith("data.root=")),
        f"data.root={root}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.batch_size=4",
        "data.pin_memory=false",
        "model.encoders.image.pretrained=false",
        "trainer.max_epochs=1",
    ]
    result = train(compose_config("train", overrides, tmp_path / "run", data_dir))
    assert 0 <= result["metrics"]["test/auroc"] <= 1  # under the training case and rate
    payload = json.loads(Path(result["robustness"]["file"]).read_text())
    assert payload["grids"] == ["missing_cases"] and payload["metric"] == "auroc"
    both = payload["conditions"]["missing:both@0.7"]
    assert (both["kind"], both["modality"], both["level"]) == ("missing_rate", "both", 0.7)
    assert len(payload["conditions"]) == 3 + 3 * len(RATES)
    assert {"missing:text", "missing:image", "missing:both"} <= set(
        payload["summary"]["relative_robustness"]
    )
