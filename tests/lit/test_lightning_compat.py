"""The Lightning internals mmexp relies on, checked on short real runs of the installed version."""

import signal
from importlib.metadata import version
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from packaging.requirements import Requirement
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import MeanMetric

from mmexp.data.loaders import ResumableLoader
from mmexp.data.sampling import ShuffledEpochs
from mmexp.lit.lightning_compat import (
    attached_trainer,
    close_experiments,
    flush_step_metrics,
    is_lightning_signal_handler,
    loop_epoch,
    loop_trained_batches,
    peek_experiment,
    rebuild_train_loader,
    restore_update_count,
    set_experiment,
    wandb_init_arguments,
)

# 16 samples in batches of 4: 4 steps per epoch.
SAMPLES, BATCH = 16, 4


class Indices(Dataset):
    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(index)])


class Progress:
    """The loader's view of the loop, read through the adapter (as LoopProgress does)."""

    def __init__(self, datamodule: pl.LightningDataModule) -> None:
        self.datamodule = datamodule

    def epoch(self) -> int:
        trainer = self.datamodule.trainer
        return loop_epoch(trainer) if trainer is not None else 0

    def trained_batches(self) -> int:
        trainer = self.datamodule.trainer
        return loop_trained_batches(trainer) if trainer is not None else 0


class IndexData(pl.LightningDataModule):
    def train_dataloader(self) -> ResumableLoader:
        dataset = Indices()
        sampler = ShuffledEpochs(dataset, seed=3, num_replicas=1, rank=0)
        return ResumableLoader(dataset, sampler, Progress(self), batch_size=BATCH)


class Recorder(pl.LightningModule):
    """Records the sample indices of every training batch and logs the step loss."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.seen: list[list[int]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.view(-1).long().tolist())
        loss = self.layer(batch).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # As a per-step schedule does: this builds the training loader before the restore.
        assert self.trainer.estimated_stepping_batches == 2 * SAMPLES // BATCH
        return torch.optim.SGD(self.parameters(), lr=0.01)


def make_trainer(tmp_path: Path, callbacks=(), logger=False, **options) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=logger,
        callbacks=list(callbacks),
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **options,
    )


class SaveAtStep(pl.Callback):
    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


class Rebuild(pl.Callback):
    def __init__(self) -> None:
        self.position: tuple[int, int] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        rebuild_train_loader(trainer)
        self.position = (loop_epoch(trainer), loop_trained_batches(trainer))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A full run that saves a checkpoint after step 6: batch 2 of epoch 1."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    model = Recorder()
    checkpoint = folder / "step6.ckpt"
    make_trainer(folder, [SaveAtStep(6, checkpoint)]).fit(model, datamodule=IndexData())
    assert len(model.seen) == 2 * SAMPLES // BATCH
    return model.seen, checkpoint


def test_rebuilt_loader_starts_at_the_restored_position(tmp_path, uninterrupted):
    seen, checkpoint = uninterrupted
    model, rebuild = Recorder(), Rebuild()
    make_trainer(tmp_path, [rebuild]).fit(model, datamodule=IndexData(), ckpt_path=checkpoint)
    assert rebuild.position == (1, 2)
    assert model.seen == seen[6:]


def test_without_the_rebuild_the_resumed_run_trains_on_other_batches(tmp_path, uninterrupted):
    # What rebuild_train_loader is for: the loader built before the restore is not resumed.
    seen, checkpoint = uninterrupted
    model = Recorder()
    make_trainer(tmp_path).fit(model, datamodule=IndexData(), ckpt_path=checkpoint)
    assert model.seen != seen[6:]


class Progresses(pl.Callback):
    def __init__(self) -> None:
        self.read: list[tuple[int, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.read.append((loop_epoch(trainer), loop_trained_batches(trainer)))


def test_loop_progress_reads_the_epoch_and_the_batches_trained_in_it(tmp_path):
    progresses = Progresses()
    make_trainer(tmp_path, [progresses]).fit(Recorder(), datamodule=IndexData())
    steps = SAMPLES // BATCH
    assert progresses.read == [(epoch, done) for epoch in (0, 1) for done in range(1, steps + 1)]


class Collecting(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    @property
    def name(self) -> str:
        return "collecting"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if "train/loss" in metrics:
            self.steps.append(step)


class Stop(Exception):
    pass


class StopAtStep(pl.Callback):
    """End the run by raising in on_train_batch_end, as SaveOnSignal does."""

    def __init__(self, step: int, flush: bool) -> None:
        self.step, self.flush = step, flush

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            if self.flush:
                flush_step_metrics(trainer)
            raise Stop


@pytest.mark.parametrize("flush", [True, False])
def test_flushed_step_metrics_reach_the_logger(tmp_path, flush):
    logger = Collecting()
    trainer = make_trainer(tmp_path, [StopAtStep(3, flush)], logger=logger, log_every_n_steps=1)
    with pytest.raises(Stop):
        trainer.fit(Recorder(), datamodule=IndexData())
    # Logged steps count from 0: the third step is step 2, logged only when flushed.
    assert logger.steps == ([0, 1, 2] if flush else [0, 1])


class FakeRun:
    """What ``wandb.init`` returns, as far as WandbLogger uses it during a run."""

    def __init__(self, **arguments) -> None:
        self.arguments = arguments
        self.id = arguments.get("id") or "fake0001"
        self.config = self  # config.update(...) is a no-op, like the rest
        self.finished = 0

    def update(self, *args, **kwargs) -> None:
        pass

    def log(self, *args, **kwargs) -> None:
        pass

    def finish(self) -> None:
        self.finished += 1


@pytest.fixture
def wandb_init(monkeypatch):
    """wandb.init recording its runs (fake ones: no W&B state left behind by these tests)."""
    wandb = pytest.importorskip("wandb")
    assert wandb.run is None
    runs: list[FakeRun] = []

    def init(**arguments) -> FakeRun:
        runs.append(FakeRun(**arguments))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", init)
    yield runs
    assert wandb.run is None


def test_peek_does_not_start_an_experiment(tmp_path, wandb_init):
    wandb_logger = WandbLogger(save_dir=str(tmp_path))
    csv_logger = CSVLogger(tmp_path)
    assert peek_experiment(wandb_logger) is None and peek_experiment(csv_logger) is None
    assert wandb_init == []
    writer = csv_logger.experiment
    assert peek_experiment(csv_logger) is writer
    run = wandb_logger.experiment
    assert peek_experiment(wandb_logger) is run and wandb_init == [run]


def test_close_finishes_the_started_run_and_starts_none(tmp_path, wandb_init):
    wandb_logger = WandbLogger(save_dir=str(tmp_path))
    csv_logger = CSVLogger(tmp_path)
    trainer = make_trainer(tmp_path, logger=[wandb_logger, csv_logger], log_every_n_steps=1)
    close_experiments(trainer)
    assert peek_experiment(wandb_logger) is None and wandb_init == []

    trainer.fit(Recorder(), datamodule=IndexData())
    (run,) = wandb_init
    assert peek_experiment(wandb_logger) is run and run.finished == 0
    close_experiments(trainer)  # the CSV writer has no finish: left alone
    assert run.finished == 1 and wandb_init == [run]
    close_experiments(None)


def test_wandb_init_arguments_are_those_the_run_starts_with(tmp_path, wandb_init):
    logger = WandbLogger(save_dir=str(tmp_path), project="compat", group="g")
    arguments = wandb_init_arguments(logger)
    assert arguments["project"] == "compat" and arguments["dir"] == str(tmp_path)
    arguments["id"] = "abcd1234"
    assert logger.experiment.id == "abcd1234"
    (run,) = wandb_init
    assert run.arguments["group"] == "g" and run.arguments["id"] == "abcd1234"


def test_set_experiment_is_the_one_the_logger_uses(tmp_path, wandb_init):
    logger = WandbLogger(save_dir=str(tmp_path))
    run = FakeRun(id="run00001")
    set_experiment(logger, run)
    assert peek_experiment(logger) is run and logger.experiment is run
    assert logger.version == "run00001" and wandb_init == []


class LookAtHandlers(pl.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.sigterm = signal.getsignal(signal.SIGTERM)
        self.trainer_seen = attached_trainer(pl_module)


def test_lightning_composes_its_sigterm_handler_with_the_one_found(tmp_path):
    calls = []

    def launcher(signum, frame) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, launcher)
    try:
        look = LookAtHandlers()
        trainer = make_trainer(tmp_path, [look])
        trainer.fit(Recorder(), datamodule=IndexData())
        assert signal.getsignal(signal.SIGTERM) is launcher  # put back after the run
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert is_lightning_signal_handler(look.sigterm)
    for other in (launcher, signal.SIG_DFL, signal.SIG_IGN, None):
        assert not is_lightning_signal_handler(other)
    # Called (after the run, so that it stops nothing), it runs Lightning's handler and then
    # the one it found.
    look.sigterm(signal.SIGTERM, None)
    assert trainer.received_sigterm and calls == [signal.SIGTERM]


def test_attached_trainer_is_none_outside_a_trainer(tmp_path):
    model = Recorder()
    assert attached_trainer(model) is None
    look = LookAtHandlers()
    trainer = make_trainer(tmp_path, [look])
    trainer.fit(model, datamodule=IndexData())
    assert look.trainer_seen is trainer


def test_restored_metric_states_and_update_count_compute_as_the_saved_metric():
    saved = MeanMetric()
    saved.update(torch.tensor(1.0))
    saved.update(torch.tensor(4.0), weight=2)
    state, updates = saved.metric_state, saved.update_count

    restored = MeanMetric()
    restored.update(torch.tensor(10.0))
    assert restored.compute() == 10.0  # cached: reset() below must drop it
    restored.reset()
    for key, value in state.items():
        setattr(restored, key, value.clone())
    restore_update_count(restored, updates)
    assert restored.update_count == 2 and restored.update_called
    assert restored.compute() == pytest.approx(3.0)
    restored.update(torch.tensor(3.0))
    assert restored.update_count == 3 and restored.compute() == pytest.approx(3.0)


@pytest.mark.parametrize("package", ["pytorch-lightning", "torchmetrics"])
def test_the_installed_version_is_within_the_bounds_these_tests_check(package):
    """The internals are checked on the installed version: pyproject admits no newer one."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (requirement,) = [r for r in map(Requirement, dependencies) if r.name == package]
    assert any(spec.operator == "<" for spec in requirement.specifier), requirement
    assert requirement.specifier.contains(version(package)), (requirement, version(package))
