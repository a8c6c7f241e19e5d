"""Known-harmless third-party messages are silenced, narrowly; mmexp's own output stays."""

import logging
import warnings
from collections.abc import Sequence

import pytest
from lightning_utilities.core import rank_zero
from pytorch_lightning.utilities import rank_zero_info

from mmexp.utils import quiet
from mmexp.utils.quiet import silence_known_noise
from tests.helpers.cli import run_cli
from tests.helpers.configs import compose_config, fast_overrides

PYTREE = "pytorch_lightning.utilities._pytree"
RESULT = "pytorch_lightning.trainer.connectors.logger_connector.result"
LEAF_SPEC = (
    "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) "
    "and treespec.is_leaf()` instead."
)
SYNC_DIST = (
    "It is recommended to use `self.log('val/acc', ..., sync_dist=True)` when logging on "
    "epoch level in distributed setting to accumulate the metric across devices."
)
# what the silenced messages print; none may show in a run's console
SILENCED = [
    "💡 Tip",
    "litlogger",
    "litmodels",
    "Skipping setting a default `ModelSummary` callback",
    "to estimate number of stepping batches",
    "LeafSpec",
    "anonymous setting has no effect",
    "sync_dist=True",
]


@pytest.fixture
def silenced():
    """``silence_known_noise`` applied for one test, and undone after it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the run's filters are inserted ahead of this one
        silence_known_noise()
        yield caught
    for name in quiet.LIGHTNING_RANK_ZERO_LOGGERS:
        logging.getLogger(name).removeFilter(quiet._LIGHTNING_FILTER)


def emit(message: str, category: type[Warning], module: str) -> None:
    warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module)


def test_silenced_warnings_only_for_their_message_and_module(silenced):
    emit(LEAF_SPEC, FutureWarning, PYTREE)
    emit(SYNC_DIST, UserWarning, RESULT)
    emit(SYNC_DIST.replace("val/acc", "test/recall@5"), UserWarning, RESULT)
    assert silenced == []
    # another warning of the same modules, and the same text from elsewhere, still show
    emit("The number of training batches (4) is smaller", UserWarning, RESULT)
    emit(SYNC_DIST.replace("val/acc", "my_value"), UserWarning, RESULT)
    emit("something else is deprecated", FutureWarning, PYTREE)
    emit(LEAF_SPEC, FutureWarning, "mymodule")
    assert [str(w.message)[:30] for w in silenced] == [
        "The number of training batches",
        "It is recommended to use `self",
        "something else is deprecated",
        "`isinstance(treespec, LeafSpec",
    ]


def test_lightning_tips_are_dropped_and_its_other_info_kept(silenced):
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = rank_zero.log  # the logger Lightning's rank_zero_info writes to
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        rank_zero_info(
            "💡 Tip: For seamless cloud logging and experiment tracking,"
            " try installing [litlogger](https://pypi.org/project/litlogger/)"
        )
        rank_zero_info("Loading `train_dataloader` to estimate number of stepping batches.")
        rank_zero_info("GPU available: False, used: False")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [r.getMessage() for r in records] == ["GPU available: False, used: False"]


def test_silencing_twice_adds_nothing(silenced):
    before = list(warnings.filters)
    silence_known_noise()
    assert warnings.filters == before
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    assert logger.filters.count(quiet._LIGHTNING_FILTER) == 1


@pytest.mark.slow
def test_train_and_eval_consoles_are_free_of_known_noise(tmp_path, data_dir):
    # A real run through the entry points with W&B offline (not silent) and the default
    # callbacks: each silenced message of a one-process run would show here (the sync_dist
    # advice needs several processes; the unit test above covers it). No warning filters
    # from the environment.
    env = dict.fromkeys(("WANDB_SILENT", "WANDB_API_KEY", "PYTHONWARNINGS"))
    run_dir = tmp_path / "run"

    def run(entry: str, *args: str, fast: Sequence[str] = ()) -> str:
        completed = run_cli(entry, *args, cwd=tmp_path, fast=fast, env=env, timeout=300)
        return completed.stdout + completed.stderr

    trained = run(
        "train",
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=1",
        fast=fast_overrides(without=("logger", "++callbacks.model_summary")),
    )
    checkpoint = next((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    evaluated = run("eval", f"hydra.run.dir={tmp_path / 'eval'}", f"ckpt_path={checkpoint}")
    assert "mmexp train: final metrics" in trained and "mmexp eval: test metrics" in evaluated
    assert "wandb: Tracking run" in trained  # W&B ran, and says so
    for output in (trained, evaluated):
        assert "GPU available:" in output  # Lightning's other messages still show
        assert [m for m in SILENCED if m in output] == []
        # Lightning's test table is not printed beside mmexp's summary of the same figures
        assert "Test metric" not in output and "DataLoader 0" not in output
    # nor its module table beside mmexp's parameter counts, size and modes
    assert "Total estimated model params size" not in trained and "┃ Name" not in trained
    assert "parameters:\n" in trained and "MB of parameters; modules:" in trained


def test_lightnings_model_summary_can_be_added_back(tmp_path, data_dir):
    fast = fast_overrides(without=("++callbacks.model_summary",))
    default = compose_config("train", fast, tmp_path / "default", data_dir)
    assert "model_summary" not in default.callbacks and not default.trainer.enable_model_summary
    chosen = ["callbacks=[default,model_summary]", *fast]
    cfg = compose_config("train", chosen, tmp_path / "chosen", data_dir)
    assert cfg.callbacks.model_summary._target_.endswith("RichModelSummary")
