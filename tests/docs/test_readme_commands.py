"""Every mmexp command the README and docs show composes and passes the config check.

The commands are read from the Markdown itself (``bash`` blocks and inline code spans), so
a renamed key, group or option that a shown command still uses fails here, not on a
reader's machine. A multirun is checked on the first value of each sweep; placeholders
(``<run>``, ``/path/to/...``) stay strings, since composing reads no file. The commands a
test also runs end to end are in ``test_readme_runs.py`` and the tests it names.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from mmexp.config_check import check_config
from mmexp.tables.cli import parse_args
from mmexp.utils.resolvers import register_resolvers
from tests.helpers.configs import CONF_DIR

ROOT = Path(__file__).resolve().parents[2]
# docs/extending/ is left to tests/docs/test_guides.py, which writes the guides' own configs
# (fusion=max, --config-dir mylab/conf) and runs their commands.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "sweeps/README.md"]
ENTRIES = {"mmexp-train": "train", "mmexp-eval": "eval", "mmexp-bench": "bench"}
# Spans that name a console script without a command line (the prose around them gives it).
BARE = {"mmexp-train", "mmexp-eval", "mmexp-bench", "mmexp-table"}


@dataclass(frozen=True)
class Command:
    """One shown command: where it is and its words."""

    source: str
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.source}: {' '.join(self.words)}"


def shown_commands() -> list[Command]:
    """Every ``mmexp-*`` command line of the documents, with continuation lines joined."""
    commands = []
    for document in DOCUMENTS:
        text = document.read_text()
        name = document.relative_to(ROOT)
        lines = []
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.S):
            lines += block.replace("\\\n", " ").splitlines()
        spans = [" ".join(span.split()) for span in re.findall(r"`(mmexp-[^`]+)`", text)]
        lines += [span for span in spans if not is_fragment(span)]
        for line in lines:
            line = line.split(" #")[0].strip().removeprefix("$ ")
            # `pip install ... && mmexp-train`: the part after the install
            line = line.split("&& ")[-1]
            if line.startswith("mmexp-") and line not in BARE:
                # a placeholder such as <hub name or folder> stands for one word
                line = re.sub(r"<([^>]+)>", lambda m: "_".join(m[1].split()), line)
                words = shlex.split(line)
                commands.append(Command(f"{name}", tuple(words)))
    return commands


def is_fragment(span: str) -> bool:
    """An inline span that shows part of a command: an option, ``...`` or ``k=<value>``."""
    words = span.split()
    flags_only = words[0] == "mmexp-table" and len(words) > 1 and words[1].startswith("-")
    return flags_only or "..." in span or "=<" in span


def first_of_each_sweep(overrides: list[str]) -> list[str]:
    """The overrides of the multirun's first job (a sweep ``k=a,b`` becomes ``k=a``)."""
    parser = OverridesParser.create()
    chosen = []
    for text, parsed in zip(overrides, parser.parse_overrides(overrides), strict=True):
        if parsed.is_sweep_override():
            first = next(iter(parsed.sweep_string_iterator()))
            chosen.append(f"{parsed.get_key_element()}={first}")
        else:
            chosen.append(text)
    return chosen


def compose_shown(entry: str, overrides: list[str]) -> None:
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(entry, overrides=overrides)
    check_config(cfg)


COMMANDS = shown_commands()


def test_the_documents_show_the_commands_read_here():
    entries = {command.words[0] for command in COMMANDS}
    assert entries == {*ENTRIES, "mmexp-table"}, entries
    # README alone shows about 70; a parser that lost them would check nothing.
    assert len([c for c in COMMANDS if c.source == "README.md"]) >= 60


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_shown_command_composes_and_passes_the_config_check(command):
    entry, *arguments = command.words
    if entry == "mmexp-table":
        parse_args(arguments)  # argparse exits on an unknown flag or a bad value
        return
    overrides = [a for a in arguments if a not in ("-m", "--multirun")]
    compose_shown(ENTRIES[entry], first_of_each_sweep(overrides))


def test_a_command_with_a_renamed_key_fails_the_check():
    with pytest.raises(Exception, match="hiden_dim"):
        compose_shown("train", ["fusion=gated", "fusion.hiden_dim=8"])
