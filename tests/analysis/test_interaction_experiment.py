"""``experiment=interaction_analysis`` composes every job of its sweep, analyses included."""

import shlex
from itertools import product

import pytest
from omegaconf import OmegaConf

from mmexp.analysis.run import check_configured, configured_components
from mmexp.builders import build_module
from mmexp.config_check import check_config
from mmexp.tables.cli import main as table
from mmexp.tables.cli import parse_args
from tests.helpers.analysis_runs import make_analysis, write_run
from tests.helpers.configs import CONF, compose_config

EXPERIMENT = CONF / "experiment" / "interaction_analysis.yaml"
TASKS = ["redundant", "unique_image", "unique_text", "synergy"]
PAIRS = {"synergy": ["image", "audio"]}  # the others: image + text


def sweep():
    params = OmegaConf.load(EXPERIMENT).hydra.sweeper.params
    return {name: str(values).split(",") for name, values in params.items()}


def commented(command):
    """The ``command`` of the file's top comment, split, its continuation lines joined."""
    lines = [line[1:].strip() for line in EXPERIMENT.read_text().splitlines() if line[:1] == "#"]
    for index, line in enumerate(lines):
        if line.startswith(f"{command} "):
            parts = [line]
            while parts[-1].endswith("\\"):
                parts[-1] = parts[-1][:-1]
                index += 1
                parts.append(lines[index])
            return shlex.split(" ".join(parts))
    raise AssertionError(f"no {command} command in the comment of {EXPERIMENT.name}")


def test_the_sweep_is_strategies_by_tasks_by_five_seeds():
    params = sweep()
    assert params["data.task"] == TASKS and params["seed"] == ["0", "1", "2", "3", "4"]
    assert {"late", "concat", "tensor"} <= set(params["fusion"])
    assert {"cross_attention", "early_tokens"} & set(params["fusion"])
    assert not any(name.startswith("unimodal") for name in params["fusion"])  # EMAP/PID need two


@pytest.mark.parametrize(("task", "fusion"), list(product(TASKS, sweep()["fusion"])))
def test_every_job_runs_the_three_analyses_on_its_pair(tmp_path, data_dir, task, fusion):
    overrides = ["experiment=interaction_analysis", f"data.task={task}", f"fusion={fusion}"]
    cfg = compose_config("train", [*overrides, "seed=1"], tmp_path / "run", data_dir)
    check_config(cfg)
    assert cfg.study == "interaction_analysis" and cfg.task_name == "interaction_analysis"
    assert list(cfg.data.modalities) == PAIRS.get(task, ["image", "text"])
    assert list(configured_components(cfg)) == ["contribution", "emap", "pid"]
    assert cfg.analysis.pid.n_clusters == 8 and cfg.data.num_test == 2000
    # the analyses accept the job's model (two modalities, a classifier) before it trains
    check_configured(cfg, build_module(cfg, num_classes=2 if task == "synergy" else 3))


def test_the_modalities_can_still_be_chosen_on_the_command_line(tmp_path, data_dir):
    overrides = [
        "experiment=interaction_analysis",
        "data.task=synergy",
        "data.modalities=[image,text]",
    ]
    cfg = compose_config("train", overrides, tmp_path / "run", data_dir)
    assert list(cfg.data.modalities) == ["image", "text"]


def test_the_documented_commands(tmp_path, capsys):
    run = commented("mmexp-train")
    assert run[:3] == ["mmexp-train", "-m", "experiment=interaction_analysis"]
    command = commented("mmexp-table")
    root = tmp_path / command[1]
    for (task, fusion), seed in product([("synergy", "concat"), ("unique_text", "late")], (0, 1)):
        modalities = PAIRS.get(task, ["image", "text"])
        shapley = dict(zip(modalities, (0.1, 0.3), strict=True))
        pid = (0.01, (0.02, 0.03), 0.4)
        payload = make_analysis(0.8, shapley, 0.3, pid, pid, modalities=modalities)
        write_run(
            root, f"{task}-{fusion}-{seed}", fusion, seed, payload, task, modalities=modalities
        )
    argv = [str(root), *command[2:]]
    argv[argv.index("--out") + 1] = str(tmp_path / "table")
    args = parse_args(argv)
    assert args.rows == "data.task,fusion" and args.analysis_plots
    assert table(argv) == 0
    printed = capsys.readouterr().out
    header = "| data.task,fusion | test/acc | EMAP gap | R model | U_audio model | U_image model |"
    assert header in printed and "| synergy / concat | **0.800 ± 0.000 (2)** |" in printed
    for name in ("shapley", "pid_model", "pid_data", "emap"):
        assert (tmp_path / f"table_{name}.png").is_file()
