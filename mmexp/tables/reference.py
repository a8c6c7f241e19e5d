"""Published numbers beside reproduced ones: the reproduction check of a paper table.

``mmexp-table --reference published.csv`` reads the numbers a paper reports and prints each
next to the reproduced cell, their difference, and whether the published number lies in the
reproduced cell's 95 % interval (or within one standard deviation when the table has no
intervals). The file is a CSV with a header::

    row,column,value,source
    concat,redundant,91.2,Table 3 of Smith et al. 2024
    late,redundant,88.0,

``row`` and ``column`` are written as the table prints them (several row axes joined by
`` / ``), ``column`` may be left out when the table has one column, and ``value`` is in the
units the table shows (percent under the default ``--scale 100``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmexp.tables.aggregate import Table

REQUIRED = ("row", "value")


@dataclass(frozen=True)
class Reference:
    """One published number: where it goes in the table and where it comes from."""

    row: str
    column: str
    value: float
    source: str
    line: int


@dataclass(frozen=True)
class Comparison:
    """A published number and the reproduced cell it is compared with (display units)."""

    row: Any
    column: Any
    published: float
    source: str
    n: int
    mean: float
    std: float
    interval: tuple[float, float] | None

    @property
    def difference(self) -> float:
        """Reproduced mean minus published value (NaN when no run reproduced it)."""
        return self.mean - self.published if self.n else math.nan

    @property
    def agrees(self) -> bool | None:
        """Whether the published value lies in the interval (else mean ± std).

        ``None`` below two runs: one seed has no spread to judge a difference by.
        """
        if self.n < 2:
            return None
        low, high = self.interval or (self.mean - self.std, self.mean + self.std)
        return low <= self.published <= high


def read_reference(path: Path) -> list[Reference]:
    """The published numbers in ``path``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A required column is missing, or a value is not a finite number; the
            message names the file and line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--reference {path}: no such file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in REQUIRED if name not in fields]
        if missing:
            raise ValueError(
                f"--reference {path}: no {missing} column in the header {fields}; it needs "
                "row and value, and may have column and source"
            )
        references = []
        for line, record in enumerate(reader, start=2):
            record = {key.strip(): (text or "").strip() for key, text in record.items() if key}
            try:
                value = float(record["value"])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(
                    f"--reference {path}, line {line}: value {record['value']!r} is not a number"
                )
            references.append(
                Reference(
                    record["row"],
                    record.get("column", ""),
                    value,
                    record.get("source", ""),
                    line,
                )
            )
    return references


def _find(options: Sequence[Any], name: str, what: str, where: str) -> Any:
    matches = [option for option in options if str(option) == name]
    if not matches:
        raise ValueError(f"{where}: {what} {name!r} is not in the table; it has {list(options)}")
    return matches[0]


def compare(
    table: Table, references: Sequence[Reference], path: Path, scale: float
) -> list[Comparison]:
    """Each published number beside its reproduced cell, in the table's display units.

    Raises:
        ValueError: A row or column is not in the table, or the column is left out of a
            table with several; the message names the file, line and what the table has.
    """
    comparisons = []
    for reference in references:
        where = f"--reference {path}, line {reference.line}"
        row = _find(table.rows, reference.row, "row", where)
        if reference.column:
            column = _find(table.columns, reference.column, "column", where)
        elif len(table.columns) == 1:
            column = table.columns[0]
        else:
            raise ValueError(
                f"{where}: no column given, and the table has several: {list(table.columns)}"
            )
        cell = table.cell(row, column)
        interval = cell.interval
        comparisons.append(
            Comparison(
                row,
                column,
                reference.value,
                reference.source,
                cell.n,
                cell.mean * scale if cell.n else math.nan,
                cell.std * scale if cell.n else math.nan,
                (interval[0] * scale, interval[1] * scale) if interval else None,
            )
        )
    return comparisons


def _number(value: float, digits: int, sign: bool = False) -> str:
    if math.isnan(value):
        return "--"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def reference_markdown(comparisons: Sequence[Comparison], table: Table, digits: int) -> str:
    """The comparison as a Markdown table, with a legend saying what agreement means."""
    spread = "95 % CI" if table.interval else "mean ± std"
    header = [table.row_axis, table.column_axis or "metric", "published", "reproduced", "Δ"]
    lines = [
        "| " + " | ".join([*header, f"published in {spread}", "source"]) + " |",
        "|" + "---|" * (len(header) + 2),
    ]
    for item in comparisons:
        reproduced = (
            f"{item.mean:.{digits}f} ± {item.std:.{digits}f} ({item.n})" if item.n else "--"
        )
        agrees = {True: "yes", False: "no", None: "--"}[item.agrees]
        cells = [
            str(item.row),
            str(item.column),
            _number(item.published, digits),
            reproduced,
            _number(item.difference, digits, sign=True),
            agrees,
            item.source,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{table.metric}: published numbers beside the reproduced mean ± std over seeds "
        f"(n runs); Δ = reproduced - published; agreement: the published number lies in "
        f"the reproduced {spread}."
    )
    return "\n".join(lines) + "\n"


def write_reference_csv(comparisons: Sequence[Comparison], table: Table, path: Path) -> None:
    """One line per published number, in display units, for further analysis."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                table.row_axis,
                table.column_axis or "metric",
                "published",
                "mean",
                "std",
                "n",
                "ci_low",
                "ci_high",
                "difference",
                "agrees",
                "source",
            ]
        )
        for item in comparisons:
            writer.writerow(
                [
                    item.row,
                    item.column,
                    item.published,
                    "" if item.n == 0 else item.mean,
                    "" if item.n == 0 else item.std,
                    item.n,
                    "" if item.interval is None else item.interval[0],
                    "" if item.interval is None else item.interval[1],
                    "" if item.n == 0 else item.difference,
                    "" if item.agrees is None else int(item.agrees),
                    item.source,
                ]
            )
