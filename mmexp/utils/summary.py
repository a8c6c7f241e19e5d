"""The final metrics summary printed at the end of a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


@rank_zero_only
def print_summary(title: str, metrics: Mapping[str, Any], footer: Mapping[str, Any]) -> None:
    """Print metrics grouped by split in a table, then the run's key facts.

    Args:
        title: Table title.
        metrics: ``{"split/metric": value}``.
        footer: Extra lines shown below the table (run folder, checkpoint, ...).
    """
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def order(name: str) -> tuple[int, str]:
        return SPLIT_ORDER.get(name.split("/")[0], 3), name

    for name in sorted(metrics, key=order):
        value = metrics[name]
        table.add_row(name, "n/a" if value is None else f"{value:.4f}")
    console = Console()
    console.print(table)
    for key, value in footer.items():
        console.print(f"[bold]{key}[/bold]: {value}")
