"""Read an experiment file back: the commands of its header comment and its sweep."""

from __future__ import annotations

import shlex

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from mmexp.utils.resolvers import register_resolvers
from tests.helpers.configs import CONF, CONF_DIR


def documented_commands(experiment: str, program: str) -> list[list[str]]:
    """The ``program`` command lines of the experiment file's header, as argument lists."""
    lines, command = [], ""
    for line in (CONF / "experiment" / f"{experiment}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if command or text.startswith(f"{program} "):
            command += " " + text.rstrip("\\").strip()
            if not text.endswith("\\"):
                lines.append(shlex.split(command))
                command = ""
    return lines


def sweep(overrides: list[str]) -> tuple[str, dict[str, str]]:
    """The Hydra mode and sweeper params an experiment sets (compose_config drops hydra)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    return str(cfg.hydra.mode), {str(k): str(v) for k, v in cfg.hydra.sweeper.params.items()}
