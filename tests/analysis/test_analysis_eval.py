"""``analysis=[...]`` end to end on tiny checkpoints: the file, its numbers, resuming, errors.

One concat run is trained with ``analysis=[contribution]`` and analysed again by
``mmexp-eval`` through the CLI; a late-fusion run (an additive model) checks EMAP's exact
case. The other evaluations run in this process (the ``evaluate`` the CLI calls). The subset
metrics are checked against the robustness grid of the same checkpoint, which scores them on
its own path (one pass of the test loader, its own metric copies).
"""

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from hydra.errors import MissingConfigException

import mmexp.analysis.run as analysis_run
from mmexp.analysis.contribution import ModalityContribution
from mmexp.analysis.pid import PIDSolverError
from mmexp.eval import evaluate
from tests.helpers.cli import run_cli
from tests.helpers.configs import compose_config
from tests.helpers.tiny_runs import train_tiny

COMPONENTS = ["contribution", "emap", "pid"]
METRICS = {"acc", "auroc", "f1_macro", "loss"}
SUBSETS = {"image", "text", "image+text"}
ATOMS = ["redundancy", "unique_image", "unique_text", "synergy"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is faster than two that wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A concat run trained with analysis=[contribution] (its best checkpoint analysed)."""
    folder = tmp_path_factory.mktemp("runs") / "concat"
    record = train_tiny(folder, data_dir, "analysis=[contribution]")
    return SimpleNamespace(
        folder=folder,
        record=record,
        checkpoint=folder / "checkpoints" / "last.ckpt",
        analysed=(folder / "analysis.json").read_text(),  # before mmexp-eval sets it aside
    )


@pytest.fixture(scope="module")
def cli(trained, tmp_path_factory):
    """``mmexp-eval analysis=[contribution,emap,pid]`` of last.ckpt, into the run folder."""
    eval_dir = tmp_path_factory.mktemp("cli") / "eval"
    done = run_cli(
        "eval",
        f"ckpt_path={trained.checkpoint}",
        "analysis=[contribution,emap,pid]",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={eval_dir}",
        cwd=eval_dir.parent,
        env={"OMP_NUM_THREADS": "1"},
    )
    payload = json.loads((trained.folder / "analysis.json").read_text())
    return SimpleNamespace(
        payload=payload,
        components=payload["components"],
        record=json.loads((eval_dir / "results.json").read_text()),
        output=done.stdout + done.stderr,
        eval_dir=eval_dir,
    )


@pytest.fixture(scope="module")
def late(tmp_path_factory, data_dir):
    """A late-fusion run (mean of per-modality logits) analysed with EMAP after its test."""
    folder = tmp_path_factory.mktemp("runs") / "late"
    train_tiny(folder, data_dir, "fusion=late", "analysis=[emap]")
    return json.loads((folder / "analysis.json").read_text())["components"]["emap"]


def eval_config(checkpoint, tmp_path, data_dir, *overrides):
    overrides = [f"ckpt_path={checkpoint}", "trainer.accelerator=cpu", *overrides]
    return compose_config("eval", ["callbacks=none", *overrides], tmp_path / "eval", data_dir)


def analysed(checkpoint, tmp_path, data_dir, *overrides):
    """Evaluate with ``overrides`` into ``tmp_path/out``; the analysis.json written."""
    out = tmp_path / "out"
    evaluate(
        eval_config(checkpoint, tmp_path, data_dir, f"analysis_set.output_dir={out}", *overrides)
    )
    return json.loads((out / "analysis.json").read_text())


def test_training_with_an_analysis_writes_it_beside_its_results(trained):
    record, folder = trained.record, trained.folder
    assert record["analysis"] == {
        "file": str(folder / "analysis.json"),
        "components": ["contribution"],
    }
    payload = json.loads(trained.analysed)
    assert payload["checkpoint"] == record["best_checkpoint"]
    assert list(payload["components"]) == ["contribution"]
    tested = payload["components"]["contribution"]["subsets"]["image+text"]
    assert tested["acc"] == pytest.approx(record["metrics"]["test/acc"], rel=1e-6)


def test_eval_writes_every_component_in_the_run_folder(trained, cli):
    payload, record = cli.payload, cli.record
    assert record["analysis"] == {
        "file": str(trained.folder / "analysis.json"),
        "components": COMPONENTS,
    }
    assert payload["format"] == 1 and payload["checkpoint"] == str(trained.checkpoint)
    assert payload["modalities"] == ["image", "text"]
    assert (payload["max_samples"], payload["seed"]) == (2000, 0)
    assert payload["set"] == {"n": 80, "total": 80, "seed": 0}  # 80 < max_samples: all
    assert list(cli.components) == COMPONENTS
    assert all(entry["seconds"] >= 0 for entry in cli.components.values())
    contribution = cli.components["contribution"]
    assert set(contribution["subsets"]) == SUBSETS and contribution["metric"] == "acc"
    assert all(set(scores) == METRICS for scores in contribution["subsets"].values())
    assert set(contribution["empty"]) == METRICS
    for metric in METRICS:  # the full set is the test split: the same scores as the test
        expected = record["metrics"][f"test/{metric}"]
        assert contribution["subsets"]["image+text"][metric] == pytest.approx(expected, rel=1e-5)
    shares = contribution["per_sample"]["shares"]
    assert sum(shares.values()) == pytest.approx(1.0) and contribution["per_sample"]["n"] == 80
    emap = cli.components["emap"]
    assert (emap["n"], emap["pairs"], emap["groups"]) == (80, 6400, [["image"], ["text"]])
    assert emap["accuracy"] == pytest.approx(record["metrics"]["test/acc"], rel=1e-6)
    assert cli.components["pid"]["modalities"] == ["image", "text"]
    # the training run's analysis was of its best checkpoint: another one, kept byte for byte
    assert (trained.folder / "analysis.previous-1.json").read_text() == trained.analysed


def test_progress_is_logged_and_the_numbers_reach_the_loggers(cli):
    for position, name in enumerate(COMPONENTS, start=1):
        assert f"analysis {position}/3: {name}" in cli.output
    header = (cli.eval_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in (
        "analysis/contribution/shapley/text",
        "analysis/emap/gap",
        "analysis/pid/model/synergy",
    ):
        assert key in header


def test_subset_metrics_equal_the_robustness_grids(trained, cli, tmp_path, data_dir):
    overrides = ["robustness=missing", "robustness.missing_rates=[]"]
    cfg = eval_config(trained.checkpoint, tmp_path, data_dir, *overrides)
    cfg.robustness.output_dir = str(tmp_path / "robust")
    evaluate(cfg)
    conditions = json.loads((tmp_path / "robust" / "robustness.json").read_text())["conditions"]
    subsets = cli.components["contribution"]["subsets"]
    for condition, subset in [
        ("subset:image", "image"),
        ("subset:text", "text"),
        ("clean", "image+text"),
    ]:
        robust = conditions[condition]["metrics"]
        assert robust.keys() == subsets[subset].keys()
        for metric, value in robust.items():
            assert subsets[subset][metric] == pytest.approx(value, rel=1e-5, abs=1e-7), (
                subset,
                metric,
            )


def test_shapley_values_drops_and_the_two_player_closed_form(cli):
    entry = cli.components["contribution"]
    value = {subset: scores["acc"] for subset, scores in entry["subsets"].items()}
    empty, full = entry["empty"]["acc"], value["image+text"]
    phi = entry["shapley"]
    # efficiency: the values share the full model's accuracy above the empty coalition's
    assert phi["image"] + phi["text"] == pytest.approx(full - empty, abs=1e-6)
    assert entry["shapley_total"] == pytest.approx(full - empty, abs=1e-6)
    assert entry["full_minus_empty"] == pytest.approx(full - empty, abs=1e-6)
    # two players: the mean of the modality's gain over the empty set and over the other one
    expected_image = ((value["image"] - empty) + (full - value["text"])) / 2
    expected_text = ((value["text"] - empty) + (full - value["image"])) / 2
    assert phi["image"] == pytest.approx(expected_image, abs=1e-6)
    assert phi["text"] == pytest.approx(expected_text, abs=1e-6)
    assert entry["drop"]["image"] == pytest.approx(full - value["text"], abs=1e-6)
    assert entry["drop"]["text"] == pytest.approx(full - value["image"], abs=1e-6)


def test_emap_of_an_additive_model_is_the_model(late, cli):
    # Late fusion averages per-modality logits: f(t, v) = g(t) + h(v) is its own projection.
    assert late["gap"] == 0.0 and late["agreement"] == 1.0
    assert late["emap_accuracy"] == late["accuracy"]
    concat = cli.components["emap"]
    assert -1.0 <= concat["gap"] <= 1.0 and 0.0 <= concat["agreement"] <= 1.0


def test_pid_is_optimal_and_its_atoms_sum_to_the_total(cli):
    pid = cli.components["pid"]
    assert pid["discretization"]["image"]["n_clusters"] == 20
    for target in ("data", "model"):
        entry = pid[target]
        assert entry["status"] == "optimal" and entry["solver"] == "CLARABEL"
        assert all(entry[atom] >= 0 for atom in ATOMS)
        assert sum(entry[atom] for atom in ATOMS) == pytest.approx(entry["total"], abs=4e-6)
        assert entry["total"] <= torch.log2(torch.tensor(3.0)).item() + 1e-6  # 3 classes


def test_resuming_runs_only_the_components_not_done(trained, tmp_path, data_dir, monkeypatch):
    first = analysed(trained.checkpoint, tmp_path, data_dir, "analysis=[contribution]")

    def rerun(self, analysis):
        raise AssertionError("a finished component ran again")

    monkeypatch.setattr(ModalityContribution, "run", rerun)
    second = analysed(trained.checkpoint, tmp_path, data_dir, "analysis=[contribution,emap]")
    assert list(second["components"]) == ["contribution", "emap"]
    before, after = first["components"]["contribution"], second["components"]["contribution"]
    assert json.dumps(after) == json.dumps(before)  # byte for byte, its seconds too
    assert not (tmp_path / "out" / "analysis.previous-1.json").exists()
    # another analysis set is another analysis: the file is set aside, not extended
    third = analysed(
        trained.checkpoint, tmp_path, data_dir, "analysis=[emap]", "analysis_set.max_samples=40"
    )
    assert list(third["components"]) == ["emap"] and third["set"]["n"] == 40
    kept = json.loads((tmp_path / "out" / "analysis.previous-1.json").read_text())
    assert kept == second


def test_a_component_whose_settings_changed_runs_again(trained, tmp_path, data_dir):
    first = analysed(trained.checkpoint, tmp_path, data_dir, "analysis=[contribution,emap]")
    assert first["configs"]["contribution"]["metric"] is None
    assert first["configs"]["emap"]["max_samples"] == 1000
    overrides = ["analysis=[contribution,emap]", "analysis.contribution.metric=f1_macro"]
    second = analysed(trained.checkpoint, tmp_path, data_dir, *overrides)
    assert second["components"]["contribution"]["metric"] == "f1_macro"
    assert second["configs"]["contribution"]["metric"] == "f1_macro"
    assert json.dumps(second["components"]["emap"]) == json.dumps(first["components"]["emap"])


@pytest.fixture(scope="module")
def unimodal(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("runs") / "unimodal"
    return train_tiny(folder, data_dir, "data.modalities=[image]", "fusion=unimodal_image")[
        "last_checkpoint"
    ]


@pytest.fixture(scope="module")
def contrastive(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("runs") / "contrastive"
    return train_tiny(folder, data_dir, "objective=contrastive")["last_checkpoint"]


def refused(checkpoint, tmp_path, data_dir, *overrides, error, match):
    """The eval fails with ``error`` before its test ran and leaves no analysis.json."""
    with pytest.raises(error, match=match) as caught:
        analysed(checkpoint, tmp_path, data_dir, *overrides)
    assert not (tmp_path / "out" / "analysis.json").exists()
    record = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert record["status"] == "failed"
    return caught.value, record


@pytest.mark.parametrize("name", ["emap", "pid"])
def test_interactions_of_a_unimodal_checkpoint_are_refused(unimodal, tmp_path, data_dir, name):
    match = rf"analysis {name} needs two modalities .* the checkpoint has \['image'\]"
    _, record = refused(
        unimodal,
        tmp_path,
        data_dir,
        f"analysis=[contribution,{name}]",
        error=ValueError,
        match=match,
    )
    assert "test/acc" not in record["metrics"]  # named before the test, not after it


def test_training_refuses_an_analysis_it_could_not_run_before_training(tmp_path, data_dir):
    folder = tmp_path / "run"
    with pytest.raises(ValueError, match=r"analysis emap needs two modalities"):
        train_tiny(
            folder, data_dir, "data.modalities=[text]", "fusion=unimodal_text", "analysis=[emap]"
        )
    assert not (folder / "checkpoints").exists()


def test_a_contrastive_checkpoint_is_refused(contrastive, tmp_path, data_dir):
    match = r"analysis scores modules that fuse modalities .* ContrastivePretrainer needs every"
    refused(
        contrastive, tmp_path, data_dir, "analysis=[contribution]", error=TypeError, match=match
    )


def test_a_solver_that_does_not_converge_is_named_with_its_status(trained, tmp_path, data_dir):
    overrides = [
        "analysis=[pid]",
        "analysis.pid.solver=SCS",
        "analysis.pid.solver_options={max_iters: 2}",
    ]
    with pytest.raises(PIDSolverError) as caught:
        analysed(trained.checkpoint, tmp_path, data_dir, *overrides)
    error, message = caught.value, str(caught.value)
    assert error.status not in ("optimal", "solver_error")
    assert f"PID solver status {error.status!r}" in message
    assert "the data's PID; analysis.pid.solver=SCS" in message and "'max_iters': 2" in message
    assert not (tmp_path / "out" / "analysis.json").exists()


def test_more_modalities_than_exact_shapley_values_support(caplog):
    five = [f"m{i}" for i in range(5)]
    module = SimpleNamespace(
        handles_missing=True, predict_from_features=None, encoders=dict.fromkeys(five)
    )
    match = r"exact Shapley values over 5 modalities need 2\^5 = 32 coalitions; at most 4"
    with pytest.raises(ValueError, match=match):
        analysis_run.check_components(module, {"contribution": ModalityContribution()})
    with pytest.raises(ValueError, match=match):  # the component on its own, too
        ModalityContribution().run(SimpleNamespace(modalities=five))
    with caplog.at_level(logging.INFO), pytest.raises(ValueError, match=match):
        analysis_run.run_analyses(
            module, None, {"contribution": ModalityContribution()}, None, "x", {}
        )
    assert "analysis 1/1" not in caplog.text  # refused before the set was encoded


@pytest.mark.parametrize("config", ["eval", "train"])
def test_an_unknown_analysis_is_named(config, tmp_path, data_dir):
    with pytest.raises(MissingConfigException, match=r"Could not load 'analysis/shapely'"):
        compose_config(
            config, ["ckpt_path=x", "analysis=[contribution,shapely]"], tmp_path / "run", data_dir
        )
