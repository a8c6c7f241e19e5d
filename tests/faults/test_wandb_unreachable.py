"""W&B server unreachable at init: the run completes and every local file is written.

``tests/tracking/test_wandb_logger.py`` covers ``wandb.init`` raising (monkeypatched) and
the fall back to offline, then disabled. Here W&B really tries to reach a server that
refuses connections, with a short init timeout, so the test also shows that the run does
not hang on the network and that the note names the cause.
"""

import json
from pathlib import Path

import torch

from mmexp.train import train

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused
# Settings passed to wandb.init as a dict (_convert_): the environment is read once per
# process, when W&B first starts, so WANDB_BASE_URL set by a test may come too late.
ONLINE_TO_NOWHERE = [
    "logger=many",
    "logger.wandb.mode=online",
    "+logger.wandb._convert_=all",
    f"+logger.wandb.settings.base_url={UNREACHABLE}",
    "+logger.wandb.settings.init_timeout=3",
    f"+logger.wandb.settings.api_key={'0' * 40}",
]


def test_unreachable_server_falls_back_and_the_local_record_is_complete(
    make_train_cfg, monkeypatch
):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # WANDB_MODE would override mode=online
    cfg = make_train_cfg(
        *ONLINE_TO_NOWHERE,
        "data.num_train=64",
        "data.num_val=32",
        "data.num_test=32",
        "trainer.max_epochs=1",
    )
    result = train(cfg)
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "results.json").read_text())
    assert saved["status"] == "completed" and saved["metrics"]["test/acc"] is not None
    (note,) = saved["tracking_fallbacks"]
    assert note == result["tracking_fallbacks"][0]
    # what failed, why, and what was done instead
    assert note.startswith("W&B online run could not start (")
    assert "127.0.0.1:9" in note, note
    assert "logged offline instead, upload later with: wandb sync" in note, note
    assert list((run / "wandb").glob("offline-run-*"))
    rows = (run / "csv" / "metrics.csv").read_text().splitlines()
    assert "val/acc" in rows[0] and len(rows) > 2
    for checkpoint in (saved["best_checkpoint"], saved["last_checkpoint"]):
        assert torch.load(checkpoint, weights_only=True)["state_dict"], checkpoint
