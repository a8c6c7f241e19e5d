"""Robustness evaluation end to end, on one tiny checkpoint trained with robustness=missing.

``mmexp-eval robustness=missing`` runs once through the CLI; the other evaluations run in
this process (the same ``evaluate`` the CLI calls). The subset and missing-rate scores are
recomputed here from the encoder outputs, with the modality marked absent by hand.
"""

import csv
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import accuracy_score

import mmexp.robustness.evaluate as evaluation
from mmexp.assemble import assemble
from mmexp.data.missing import MissingModalities
from mmexp.encoders.base import EncoderOutput
from mmexp.eval import evaluate
from mmexp.resolve import resolve_run_config
from mmexp.tables.cli import main as table
from tests.helpers.cli import run_cli
from tests.helpers.configs import compose_config
from tests.helpers.tiny_runs import train_tiny

MODALITIES = ["image", "text"]
RATES = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"]
MISSING_GRID = {
    "clean",
    "subset:image",
    "subset:text",
    *(f"missing:{m}@{rate}" for m in MODALITIES for rate in RATES),
}
# subsets, two missing rates per modality and one noise level of one perturbation each
NOISE = "{_target_: mmexp.robustness.perturbations.GaussianImageNoise, _partial_: true}"
DROP = "{_target_: mmexp.robustness.text_perturbations.WordDropout, _partial_: true}"
SMALL_GRID = [
    "robustness=missing",
    "robustness.missing_rates=[0.5,1.0]",
    "robustness.levels=[0.5]",
    # ++: the grid's perturbations are an empty mapping, which Hydra adds no keys to
    f"++robustness.perturbations.image={{gaussian_noise: {NOISE}}}",
    f"++robustness.perturbations.text={{word_dropout: {DROP}}}",
]
NOISY = ["noise:image/gaussian_noise@0.5", "noise:text/word_dropout@0.5"]
REMOVING = ["clean", "subset:image", "subset:text"]
REMOVING += [f"missing:{m}@{rate}" for m in MODALITIES for rate in ("0.5", "1")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A run folder (under a folder of runs) trained and scored with robustness=missing."""
    root = tmp_path_factory.mktemp("runs")
    result = train_tiny(root / "seed42", data_dir, "robustness=missing")
    folder = root / "seed42"
    scored = (folder / "robustness.json").read_text()  # before any evaluation replaces it
    checkpoint = folder / "checkpoints" / "last.ckpt"
    return SimpleNamespace(
        root=root, folder=folder, result=result, checkpoint=checkpoint, scored=scored
    )


@pytest.fixture(scope="module")
def cli(trained, tmp_path_factory):
    """``mmexp-eval robustness=missing`` of last.ckpt, written in the run folder."""
    eval_dir = tmp_path_factory.mktemp("cli") / "eval"
    run_cli(
        "eval",
        f"ckpt_path={trained.checkpoint}",
        "robustness=missing",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={eval_dir}",
        cwd=eval_dir.parent,
    )
    payload = json.loads((trained.folder / "robustness.json").read_text())
    record = json.loads((eval_dir / "results.json").read_text())
    return SimpleNamespace(payload=payload, conditions=payload["conditions"], record=record)


def eval_config(trained, data_dir, eval_dir, *overrides):
    overrides = [f"ckpt_path={trained.checkpoint}", "trainer.accelerator=cpu", *overrides]
    return compose_config("eval", ["callbacks=none", *overrides], eval_dir, data_dir)


def metrics_of(conditions, name):
    return conditions[name]["metrics"]


def assert_same_metrics(actual, expected, rel=1e-6):
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=rel), key


def test_training_with_a_grid_scores_the_tested_checkpoint_beside_its_results(trained):
    folder, results = trained.folder, json.loads((trained.folder / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["robustness"] == {"file": str(folder / "robustness.json"), "conditions": 23}
    payload = json.loads(trained.scored)
    assert payload["checkpoint"] == results["best_checkpoint"] and payload["grids"] == ["missing"]
    assert set(payload["conditions"]) == MISSING_GRID
    tested = {key.removeprefix("test/"): results["metrics"][key] for key in results["metrics"]}
    for metric, value in metrics_of(payload["conditions"], "clean").items():
        assert value == pytest.approx(tested[metric], rel=1e-6), metric
    assert (folder / "robustness.csv").is_file() and (folder / "robustness_curves.png").is_file()


def test_eval_writes_in_the_run_folder_and_keeps_the_other_checkpoints_scores(trained, cli):
    assert cli.payload["checkpoint"] == str(trained.checkpoint.resolve())
    assert set(cli.conditions) == MISSING_GRID and cli.payload["metric"] == "acc"
    assert cli.record["robustness"] == {
        "file": str(trained.folder / "robustness.json"),
        "conditions": 23,
    }
    # the training run scored its best checkpoint there first: kept, byte for byte
    assert (trained.folder / "robustness.previous-1.json").read_text() == trained.scored
    assert (trained.folder / "robustness_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (trained.folder / "robustness.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == list(cli.conditions)
    for row in rows:
        entry = cli.conditions[row["name"]]
        assert row["kind"] == entry["kind"] and row["present"] == "+".join(entry["present"])
        assert row["modality"] == (entry["modality"] or "")
        assert row["level"] == ("" if entry["level"] is None else str(entry["level"]))
        assert {key: float(row[key]) for key in entry["metrics"]} == entry["metrics"]


def test_the_clean_condition_is_a_plain_eval(trained, cli, tmp_path, data_dir):
    plain = evaluate(eval_config(trained, data_dir, tmp_path / "plain"))["metrics"]
    clean = metrics_of(cli.conditions, "clean")
    assert_same_metrics({k: plain[f"test/{k}"] for k in clean}, clean)
    assert_same_metrics(cli.record["metrics"], {f"test/{k}": v for k, v in clean.items()})


def test_a_modality_missing_from_every_sample_leaves_the_other_alone(cli):
    for modality, other in (("image", "text"), ("text", "image")):
        assert_same_metrics(
            metrics_of(cli.conditions, f"missing:{modality}@1"),
            metrics_of(cli.conditions, f"subset:{other}"),
        )


def test_removed_modalities_score_as_marked_absent_by_hand(trained, cli, tmp_path, data_dir):
    run = assemble(
        resolve_run_config(eval_config(trained, data_dir, tmp_path / "own"), "eval"), "eval"
    )
    module, data = run.module.eval(), run.datamodule
    data.setup("test")
    batches = []
    with torch.no_grad():
        for batch in data.test_dataloader():
            outputs = {m: encoder(batch[m]) for m, encoder in module.encoders.items()}
            batches.append((outputs, batch["label"], batch["index"]))

    def score(keep):
        logits, labels = [], []
        with torch.no_grad():
            for outputs, label, index in batches:
                kept = keep(index)
                marked = {
                    m: EncoderOutput(
                        tokens=out.tokens,
                        mask=out.mask & kept[m][:, None],
                        pooled=out.pooled,
                        present=kept[m],
                    )
                    for m, out in outputs.items()
                }
                logits.append(module.predict_from_features(marked))
                labels.append(label)
        logits, labels = torch.cat(logits), torch.cat(labels)
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
        return accuracy_score(labels.numpy(), logits.argmax(dim=1).numpy()), loss

    expected = {}
    for kept in (["image"], ["text"]):
        expected[f"subset:{kept[0]}"] = score(
            lambda index, kept=kept: {m: torch.full((len(index),), m in kept) for m in MODALITIES}
        )
    for modality in MODALITIES:
        for rate in RATES:
            missing = MissingModalities({modality: float(rate)}, seed=0, splits=("test",))
            expected[f"missing:{modality}@{rate}"] = score(
                lambda index, missing=missing: missing.present("test", index, MODALITIES)
            )
    for name, (accuracy, loss) in expected.items():
        stored = metrics_of(cli.conditions, name)
        assert stored["acc"] == pytest.approx(accuracy, rel=1e-6), name
        assert stored["loss"] == pytest.approx(loss, rel=1e-5), name
    # the model reads both modalities: removing either changes its loss
    losses = {round(metrics_of(cli.conditions, name)["loss"], 5) for name in REMOVING[:3]}
    assert len(losses) == 3


@pytest.fixture(scope="module")
def small_grid(trained, data_dir, tmp_path_factory):
    """The payload of SMALL_GRID scored whole, in this process."""
    root = tmp_path_factory.mktemp("small")
    evaluate(
        eval_config(trained, data_dir, root / "eval", *SMALL_GRID, f"robustness.output_dir={root}")
    )
    return json.loads((root / "robustness.json").read_text())


def test_the_scores_are_reproduced_by_another_process_and_grid(small_grid, cli):
    assert set(small_grid["conditions"]) == {*REMOVING, *NOISY}
    for name in REMOVING:
        assert_same_metrics(
            metrics_of(small_grid["conditions"], name), metrics_of(cli.conditions, name)
        )


@pytest.fixture
def passes(monkeypatch):
    """The conditions of each pass over the test split; ``passes.stop_after`` interrupts."""
    score, seen = evaluation._score, []

    def counted(make_trainer, module, conditions, datamodule):
        if len(seen) == getattr(counted, "stop_after", None):
            raise RuntimeError("preempted")
        seen.append([condition.name for condition in conditions])
        return score(make_trainer, module, conditions, datamodule)

    monkeypatch.setattr(evaluation, "_score", counted)
    counted.seen = seen
    return counted


def test_deleted_conditions_alone_are_scored_again(
    trained, data_dir, small_grid, tmp_path, passes, caplog
):
    kept = {k: v for k, v in small_grid["conditions"].items() if k not in ("subset:text", NOISY[1])}
    (tmp_path / "robustness.json").write_text(json.dumps({**small_grid, "conditions": kept}))
    cfg = eval_config(
        trained, data_dir, tmp_path / "eval", *SMALL_GRID, f"robustness.output_dir={tmp_path}"
    )
    with caplog.at_level(logging.INFO, logger=evaluation.__name__):
        evaluate(cfg)
    assert "robustness: 9 conditions, 2 to score" in caplog.text
    assert passes.seen == [["subset:text"], [NOISY[1]]]
    again = json.loads((tmp_path / "robustness.json").read_text())["conditions"]
    for name, entry in kept.items():  # untouched, as stored
        assert json.dumps(again[name]) == json.dumps(entry)
    assert again == small_grid["conditions"]  # and the rescored ones as the first time


def test_an_interrupted_evaluation_keeps_its_first_pass_and_resumes(
    trained, data_dir, small_grid, tmp_path, passes
):
    cfg = eval_config(
        trained, data_dir, tmp_path / "eval", *SMALL_GRID, f"robustness.output_dir={tmp_path}"
    )
    passes.stop_after = 1
    with pytest.raises(RuntimeError, match="preempted"):
        evaluate(cfg)
    first = json.loads((tmp_path / "robustness.json").read_text())
    assert list(first["conditions"]) == REMOVING and passes.seen == [REMOVING]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["status"] == "failed"
    passes.stop_after = None
    evaluate(cfg)
    assert passes.seen == [REMOVING, [NOISY[0]], [NOISY[1]]]
    assert (
        json.loads((tmp_path / "robustness.json").read_text())["conditions"]
        == small_grid["conditions"]
    )


@pytest.mark.slow
def test_two_processes_score_each_test_sample_once(trained, tmp_path):
    scores = {}
    for name, extra in (("one", []), ("two", ["trainer=ddp_cpu"])):
        done = run_cli(
            "eval",
            f"ckpt_path={trained.checkpoint}",
            "robustness=missing",
            'overrides=["data.num_test=81"]',  # 41 + 40 samples: no padding to 82
            f"robustness.output_dir={tmp_path / name}",
            f"hydra.run.dir={tmp_path / f'eval_{name}'}",
            *extra,
            cwd=tmp_path,
            env={"OMP_NUM_THREADS": "1"},
            timeout=900,
        )
        scores[name] = json.loads((tmp_path / name / "robustness.json").read_text())["conditions"]
        rebuilt = yaml.safe_load((tmp_path / f"eval_{name}" / "run_config.yaml").read_text())
        assert rebuilt["data"]["num_test"] == 81
    assert "Starting with 2 processes" in done.stdout + done.stderr
    assert scores["one"].keys() == scores["two"].keys() == MISSING_GRID
    for name, entry in scores["one"].items():
        assert_same_metrics(metrics_of(scores["two"], name), entry["metrics"])
        correct = entry["metrics"]["acc"] * 81  # a count of 81 samples, not 82
        assert abs(correct - round(correct)) < 1e-4, name


def test_the_table_of_two_seeds_shows_their_mean_and_spread(trained, data_dir, tmp_path, capsys):
    train_tiny(trained.root / "seed7", data_dir, "robustness=missing", "seed=7")
    scored = [
        json.loads((trained.root / s / "robustness.json").read_text()) for s in ("seed42", "seed7")
    ]
    out = tmp_path / "table"
    argv = [str(trained.root), "--rows", "fusion", "--out", str(out)]
    assert table([*argv, "--robustness", "subset:image", "subset:text"]) == 0
    printed = capsys.readouterr().out
    with out.with_suffix(".csv").open() as handle:
        rows = {row["metric"]: row for row in csv.DictReader(handle)}
    for condition in ("subset:image", "subset:text"):
        values = [payload["conditions"][condition]["metrics"]["acc"] for payload in scored]
        row = rows[f"robust/{condition}/acc"]
        mean, std = np.mean(values), np.std(values, ddof=1)
        assert row["fusion"] == "concat" and row["n"] == "2"
        assert float(row["mean"]) == pytest.approx(mean) and float(row["std"]) == pytest.approx(std)
        assert f"{100 * mean:.2f} ± {100 * std:.2f} (2)" in printed
