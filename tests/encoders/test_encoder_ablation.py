"""experiment=encoder_ablation: every job composes and builds, a reduced grid tabulates.

The commands are read back from the experiment file's header comment, so a comment that
drifts from the configs fails here.
"""

import csv
import itertools

import pytest
import yaml

from mmexp.builders import build_module
from mmexp.config_check import check_config
from mmexp.encoders import (
    GRUTextEncoder,
    LogMelCNNEncoder,
    LogMelConv1dEncoder,
    LogMelLSTMEncoder,
    LSTMTextEncoder,
    SmallTextTransformer,
)
from mmexp.tables.cli import main as table_main
from mmexp.tables.collect import collect_local
from tests.helpers.cli import run_cli
from tests.helpers.configs import CONF, FAST_OVERRIDES, compose_config
from tests.helpers.experiment_files import documented_commands, sweep

STUDY = "experiment=encoder_ablation"
TEXT = {"transformer": SmallTextTransformer, "lstm": LSTMTextEncoder, "gru": GRUTextEncoder}
AUDIO = {"logmel_cnn": LogMelCNNEncoder, "lstm": LogMelLSTMEncoder, "cnn1d": LogMelConv1dEncoder}
ROWS = "model/encoders/text,model/encoders/audio"


def test_the_ablation_sweeps_encoders_fusion_task_and_seed(tmp_path, data_dir):
    mode, params = sweep([STUDY])
    assert mode == "RunMode.MULTIRUN"
    assert params == {
        "model/encoders/text": ",".join(TEXT),
        "model/encoders/audio": ",".join(AUDIO),
        "fusion": "concat,late,cross_attention",
        "data.task": "unique_text,unique_audio",
        "seed": "1,2,3,4,5",
    }
    cfg = compose_config("train", [STUDY], tmp_path / "run", data_dir)
    assert (cfg.study, cfg.task_name) == ("encoder_ablation", "encoder_ablation")
    assert list(cfg.data.modalities) == ["text", "audio"]
    # The W&B sweep runs the same grid on the same modalities.
    spec = yaml.safe_load((CONF.parent / "sweeps" / "wandb_encoder_ablation.yaml").read_text())
    assert spec["parameters"]["study"]["value"] == "encoder_ablation"
    assert spec["parameters"]["data.modalities"]["value"] == "[text,audio]"
    for key, values in params.items():
        assert [str(v) for v in spec["parameters"][key]["values"]] == values.split(","), key


def test_the_ablation_documents_its_run_and_table_commands():
    (run,) = documented_commands("encoder_ablation", "mmexp-train")
    assert run == ["mmexp-train", "-m", STUDY, "hydra.sweep.dir=outputs/encoder_ablation"]
    (table,) = documented_commands("encoder_ablation", "mmexp-table")
    assert table[1:] == [
        "outputs/encoder_ablation",
        "--rows",
        ROWS,
        "--cols",
        "data.task,fusion",
        "--baseline",
        "transformer / logmel_cnn",
        "--out",
        "outputs/encoder_ablation/table",
    ]


def test_each_encoder_pair_builds_with_token_level_fusion(tmp_path, data_dir):
    _, params = sweep([STUDY])
    texts, audios = (params[f"model/encoders/{m}"].split(",") for m in ("text", "audio"))
    for text, audio in itertools.product(texts, audios):
        overrides = [f"model/encoders/text={text}", f"model/encoders/audio={audio}"]
        cfg = compose_config(
            "train", [STUDY, *overrides, "fusion=cross_attention"], tmp_path, data_dir
        )
        check_config(cfg)
        module = build_module(cfg, num_classes=3)
        assert type(module.encoders["text"]) is TEXT[text], text
        assert type(module.encoders["audio"]) is AUDIO[audio], audio
        assert module.encoders["audio"].sample_rate == cfg.data.sample_rate


@pytest.mark.slow  # 54 compositions and config checks: about 10 s on one core
def test_every_job_composes_and_passes_the_config_check(tmp_path, data_dir):
    _, params = sweep([STUDY])
    axes = [[f"{key}={value}" for value in values.split(",")] for key, values in params.items()]
    assert len(list(itertools.product(*axes))) == 270
    for job in itertools.product(*axes[:4]):  # the seed changes no key the check reads
        cfg = compose_config("train", [STUDY, *job, "seed=1"], tmp_path, data_dir)
        check_config(cfg)
        assert cfg.data.task == job[3].split("=")[1], job
        assert cfg.fusion._target_.startswith("mmexp.fusion."), job


@pytest.mark.slow  # eight tiny runs in one multirun process: about a minute on one core
def test_a_reduced_grid_runs_and_makes_the_documented_table(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    run_cli(
        "train",
        STUDY,
        "model/encoders/text=transformer,gru",
        "model/encoders/audio=logmel_cnn,cnn1d",
        "fusion=cross_attention",
        "data.task=unique_text",
        "seed=1,2",
        "data.num_train=64",
        "data.num_val=32",
        "data.num_test=32",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={data_dir}",
        cwd=tmp_path,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
        timeout=900,
    )
    (table,) = documented_commands("encoder_ablation", "mmexp-table")
    out = tmp_path / "table"
    args = [str(sweep_dir), *table[2:-2], "--out", str(out), "--digits", "6"]
    assert table_main(args) == 0
    with out.with_suffix(".csv").open() as handle:
        rows = list(csv.DictReader(handle))
    runs = collect_local([sweep_dir])
    assert len(runs) == 8 and all(run.status == "completed" for run in runs)
    accuracies: dict[str, list[float]] = {}
    for run in runs:
        accuracies.setdefault(run.axis(ROWS), []).append(run.metrics["test/acc"])
    pairs = {f"{t} / {a}" for t in ("transformer", "gru") for a in ("logmel_cnn", "cnn1d")}
    assert set(accuracies) == pairs
    assert {row[ROWS] for row in rows} == pairs
    for row in rows:
        assert row["data.task,fusion"] == "unique_text / cross_attention"
        assert row["n"] == "2", row
        expected = sum(accuracies[row[ROWS]]) / 2
        assert float(row["mean"]) == pytest.approx(expected, abs=1e-6)
    markdown = out.with_suffix(".md").read_text()
    assert "gru / cnn1d" in markdown and "unique_text / cross_attention" in markdown
