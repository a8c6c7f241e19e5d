"""model.save_frozen_weights=false: checkpoints without the frozen towers, loaded back alike."""

from pathlib import Path

import pytest
import torch

from mmexp.builders import build_data_and_model
from mmexp.eval import evaluate
from mmexp.finetune.source import PretrainedCheckpoint
from mmexp.lit.frozen_weights import FROZEN_WEIGHTS_KEY, FrozenWeightsMismatchError
from mmexp.lit.preemption import Preempted
from mmexp.train import train
from mmexp.utils.checkpoints import load_checkpoint
from tests.helpers.configs import compose_config
from tests.helpers.frozen_towers import write_vit_weights

LEAVE_OUT = ("model.save_frozen_weights=false", "fusion=gated")


def _evaluate(checkpoint, data_dir, out, *overrides):
    cfg = compose_config(
        "eval",
        [f"ckpt_path={checkpoint}", "trainer.accelerator=cpu", "callbacks=none", *overrides],
        out,
        data_dir,
    )
    return evaluate(cfg)


def test_checkpoint_holds_only_what_trains_and_tests_like_a_full_one(frozen_cfg, data_dir):
    full = train(frozen_cfg("fusion=gated", run_name="full"))
    lean = train(frozen_cfg(*LEAVE_OUT, run_name="lean"))
    assert lean["metrics"] == full["metrics"]  # the best checkpoint was tested in both runs

    full_ckpt, lean_ckpt = (load_checkpoint(r["best_checkpoint"]) for r in (full, lean))
    left_out = set(full_ckpt["state_dict"]) - set(lean_ckpt["state_dict"])
    record = lean_ckpt[FROZEN_WEIGHTS_KEY]
    assert set(record) == {"image", "text"}
    assert left_out == set(record["image"]["keys"]) | set(record["text"]["keys"])
    assert all(key.startswith(("encoders.image.", "encoders.text.")) for key in left_out)
    # what trains (projections, fusion, head) and every buffer stay
    module = build_data_and_model(frozen_cfg(*LEAVE_OUT, run_name="probe"))[1]
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    assert set(lean_ckpt["state_dict"]) == set(module.state_dict()) - frozen
    for key, value in lean_ckpt["state_dict"].items():
        assert torch.equal(value, full_ckpt["state_dict"][key]), key
    lean_size = Path(lean["best_checkpoint"]).stat().st_size
    assert lean_size < 0.5 * Path(full["best_checkpoint"]).stat().st_size

    evaluated = _evaluate(
        lean["best_checkpoint"], data_dir, Path(lean["best_checkpoint"]).parents[2] / "eval"
    )
    assert evaluated["metrics"]["test/acc"] == pytest.approx(lean["metrics"]["test/acc"])
    assert evaluated["metrics"]["test/loss"] == pytest.approx(lean["metrics"]["test/loss"])


def test_towers_built_from_another_source_are_refused(frozen_cfg, data_dir, tmp_path):
    lean = train(frozen_cfg(*LEAVE_OUT))
    other = write_vit_weights(tmp_path / "other_vit.pth", seed=1)
    with pytest.raises(FrozenWeightsMismatchError, match=r"frozen image encoder.*other weights"):
        _evaluate(
            lean["best_checkpoint"],
            data_dir,
            tmp_path / "eval",
            f"overrides=['model.encoders.image.checkpoint_path={other}']",
        )


def test_random_frozen_tower_is_rebuilt_from_the_seed(frozen_cfg, data_dir, tmp_path):
    """A frozen random tower (the random-feature baseline) comes back from the run's seed."""
    lean = train(frozen_cfg(*LEAVE_OUT, "model.encoders.image.checkpoint_path=null"))
    evaluated = _evaluate(lean["best_checkpoint"], data_dir, tmp_path / "eval")
    assert evaluated["metrics"]["test/acc"] == pytest.approx(lean["metrics"]["test/acc"])
    with pytest.raises(FrozenWeightsMismatchError, match="seed"):
        _evaluate(
            lean["best_checkpoint"], data_dir, tmp_path / "eval_other_seed", "overrides=['seed=3']"
        )


def test_resumed_run_takes_the_left_out_weights_from_its_towers(frozen_cfg):
    run = (*LEAVE_OUT, "trainer.max_epochs=2", "model.head.dropout=0.3")
    whole = train(frozen_cfg(*run, run_name="whole"))
    # 6 steps per epoch: SIGTERM after step 8 saves last.ckpt in the middle of epoch 1
    fault = [
        "+callbacks.fault._target_=tests.helpers.faults.SignalAtStep",
        "+callbacks.fault.step=7",
        "+callbacks.fault.signal=SIGTERM",
    ]
    with pytest.raises(Preempted) as stopped:
        train(frozen_cfg(*run, *fault, run_name="stopped"))
    assert FROZEN_WEIGHTS_KEY in load_checkpoint(stopped.value.checkpoint)
    resumed = train(frozen_cfg(*run, "ckpt_path=last", run_name="stopped"))
    for key in ("val/loss", "test/loss", "test/acc", "train/loss_epoch"):
        assert resumed["metrics"][key] == pytest.approx(whole["metrics"][key], abs=1e-6), key


def test_finetuning_source_without_frozen_towers_loads_them_checked(frozen_cfg, tmp_path):
    cfg = frozen_cfg(*LEAVE_OUT)
    module = build_data_and_model(cfg)[1]
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    source = PretrainedCheckpoint(
        "ref",
        tmp_path / "x.ckpt",
        checkpoint["state_dict"],
        module.run_config,
        {},
        checkpoint[FROZEN_WEIGHTS_KEY],
    )
    assert source.towers == ["image", "text"]
    rebuilt = build_data_and_model(frozen_cfg(*LEAVE_OUT, run_name="again"))[1]
    source.load_encoder("image", rebuilt.encoders["image"])
    for key, value in module.encoders["image"].state_dict().items():
        assert torch.equal(rebuilt.encoders["image"].state_dict()[key], value), key
    with torch.no_grad():
        next(p for p in rebuilt.encoders["text"].parameters() if not p.requires_grad).add_(1)
    with pytest.raises(FrozenWeightsMismatchError, match="x.ckpt.*text encoder"):
        source.load_encoder("text", rebuilt.encoders["text"])
