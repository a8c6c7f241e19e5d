"""experiment=pretrain_finetune_public: every job composes, and a reduced grid runs and tabulates.

The reduced grid is the study's own experiment file with tiny models: mmexp's towers from a
tiny contrastive pretraining, and a tiny open_clip model (CLIP's 77-token context, so that
CoOp's 16 context vectors fit) as the public model, given through the study's
``public_model`` / ``public_weights`` keys; ``mmexp-table`` over the run folders gives each
run's ``test/acc`` in its init x protocol cell.
"""

import csv
import itertools
import json

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from mmexp.assemble import assemble
from mmexp.config_check import check_config
from mmexp.resolve import resolve_run_config
from mmexp.tables.cli import main as table_main
from mmexp.train import train
from tests.helpers.configs import CONF, FAST_OVERRIDES, compose_config
from tests.helpers.experiment_files import documented_commands, sweep
from tests.helpers.tiny_prompt_clip import write_tiny_open_clip
from tests.helpers.tiny_runs import TINY_OVERRIDES

STUDY = "experiment=pretrain_finetune_public"


def test_the_study_sweeps_init_protocol_budget_and_seed():
    mode, params = sweep([STUDY])
    assert mode == "RunMode.MULTIRUN"
    assert params == {
        "init": "scratch,contrastive,open_clip",
        "finetune": "zeroshot,logistic_probe,linear_probe,coop,lora,full",
        "data.train_subset": "16,64,200",
        "seed": "1,2,3,4,5",
    }
    # The W&B sweep runs the same grid.
    spec = yaml.safe_load((CONF.parent / "sweeps" / "pretrain_finetune_public.yaml").read_text())
    for key, values in params.items():
        assert [str(v) for v in spec["parameters"][key]["values"]] == values.split(","), key
    # The documented commands: this study's sweep folder, the table of init x protocol.
    runs = documented_commands("pretrain_finetune_public", "mmexp-train")
    assert runs[1][:3] == ["mmexp-train", "-m", STUDY]
    assert "hydra.sweep.dir=outputs/pretrain_finetune_public" in runs[1]
    (table,) = documented_commands("pretrain_finetune_public", "mmexp-table")
    assert table[1:6] == [
        "outputs/pretrain_finetune_public",
        "--rows",
        "init",
        "--cols",
        "finetune",
    ]


@pytest.mark.slow  # 54 compositions and config checks: about 17 s
def test_every_job_composes_and_passes_the_config_check(tmp_path, data_dir):
    _, params = sweep([STUDY])
    axes = [[f"{key}={value}" for value in values.split(",")] for key, values in params.items()]
    jobs = list(itertools.product(*axes[:3]))  # the seed changes no key the check reads
    assert len(jobs) * len(axes[3]) == 270
    for job in jobs:
        overrides = [STUDY, *job, "seed=1", "public_weights=/models/open_clip_pytorch_model.bin"]
        cfg = compose_config("train", overrides, tmp_path / "run", data_dir)
        check_config(cfg)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert resolved["data"]["task"] == "unique_image", job
        assert resolved["data"]["train_subset"] == int(job[2].split("=")[1]), job
        prompt = resolved["objective"]["module"]["_target_"].endswith("PromptClassifier")
        assert prompt == (job[1] in ("finetune=zeroshot", "finetune=coop")), job
        if job[0] == "init=open_clip":
            assert resolved["model"]["encoders"]["image"]["pretrained"].endswith(".bin"), job
            assert resolved["model"]["encoders"]["text"]["name"] == "ViT-B-32", job


def test_the_public_row_needs_its_weights_and_the_others_do_not(tmp_path, data_dir):
    public = compose_config("train", [STUDY, "init=open_clip"], tmp_path / "public", data_dir)
    with pytest.raises(Exception, match="public_weights is required"):
        resolve_run_config(public, "train")
    scratch = compose_config("train", [STUDY, "init=scratch"], tmp_path / "scratch", data_dir)
    OmegaConf.to_container(scratch, resolve=True)  # the unused ??? stays unread


# --- a reduced grid, end to end ----------------------------------------------------------

SMALL = [
    "experiment=finetune_public",
    *FAST_OVERRIDES,
    "data.num_train=96",
    "data.num_val=32",
    "data.train_subset=48",
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
    "finetune.n_ctx=4",  # ignored by the protocols without a context
]
PROTOCOLS = ["zeroshot", "coop", "logistic_probe"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, data_dir):
    """The reduced grid's run folders: init (contrastive, open_clip) x PROTOCOLS, seed 1."""
    root = tmp_path_factory.mktemp("public_grid")
    pre = [*TINY_OVERRIDES, "objective=contrastive", "seed=0"]
    checkpoint = train(compose_config("train", pre, root / "pretrain", data_dir))["last_checkpoint"]
    files = write_tiny_open_clip(root / "clip")
    inits = {
        "contrastive": ["init=contrastive", f"pretrained_checkpoint={checkpoint}"],
        "open_clip": [
            "init=open_clip",
            f"public_model={files['name']}",
            f"public_weights={files['pretrained']}",
            f"model.encoders.image.model_config={files['model_config']}",
            "model.width=32",
        ],
    }
    sweep_dir, runs = root / "sweep", {}
    for (init, overrides), protocol in itertools.product(inits.items(), PROTOCOLS):
        job = [*SMALL, *overrides, f"finetune={protocol}", "seed=1"]
        if protocol != "coop":
            job.remove("finetune.n_ctx=4")
        cfg = compose_config("train", job, sweep_dir / f"{init}-{protocol}", data_dir)
        if (init, protocol) == ("open_clip", "coop"):
            module = assemble(resolve_run_config(cfg.copy(), "train"), "bench").module
            before = {k: v.clone() for k, v in module.state_dict().items()}
            trainable = [n for n, p in module.named_parameters() if p.requires_grad]
        runs[init, protocol] = train(cfg)
    return sweep_dir, runs, (before, trainable)


@pytest.mark.slow  # a tiny pretraining and six runs: about 20 s on two busy cores
def test_the_reduced_grid_tabulates_each_runs_test_accuracy(grid, tmp_path):
    sweep_dir, runs, _ = grid
    out = tmp_path / "table"
    args = [str(sweep_dir), "--rows", "init", "--cols", "finetune", "--digits", "6"]
    assert table_main([*args, "--out", str(out)]) == 0
    with out.with_suffix(".csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(runs)
    for row in rows:
        record = json.loads(
            (sweep_dir / f"{row['init']}-{row['finetune']}" / "results.json").read_text()
        )
        assert record["status"] == "completed"
        assert float(row["mean"]) == pytest.approx(record["metrics"]["test/acc"], abs=1e-6)
        assert row["n"] == "1"
    lineage = runs["open_clip", "zeroshot"]["pretrained_from"]
    assert lineage["protocol"] == "zeroshot" and lineage["towers"] == ["image", "text"]


@pytest.mark.slow
def test_coop_on_a_public_open_clip_model_trains_only_the_context(grid):
    _, runs, (before, trainable) = grid
    assert trainable == ["prompts.context"]
    tuned = torch.load(runs["open_clip", "coop"]["last_checkpoint"], weights_only=True)
    state = tuned["state_dict"]
    moved = [k for k, v in before.items() if not torch.equal(state[k], v)]
    assert moved == ["prompts.context"]
    assert runs["open_clip", "coop"]["pretrained_from"]["prompts"]["n_ctx"] == 4
