"""Write a :class:`~mmexp.tables.aggregate.Table` as Markdown, LaTeX and CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mmexp.tables.aggregate import Cell, Table

SIGNIFICANCE = 0.05
MISSING = "--"


SPLIT_MARK = "§"


def cell_text(cell: Cell, digits: int, scale: float) -> str:
    """``mean ± std [low, high] (n)``, ``failed`` when every run failed, ``--`` for no run.

    The interval is there when the table has them. An asterisk marks a significant
    difference from the baseline row (paired t-test, Holm-corrected p < 0.05), a section
    sign seeds that split into two distant groups, a dagger cells with failed runs.
    """
    if cell.n == 0:
        return "failed" if cell.failed else MISSING
    text = f"{cell.mean * scale:.{digits}f} ± {cell.std * scale:.{digits}f}"
    if cell.interval is not None:
        low, high = cell.interval
        text += f" [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"
    text += f" ({cell.n})"
    if cell.p_adjusted is not None and cell.p_adjusted < SIGNIFICANCE:
        text += "*"
    if cell.split:
        text += SPLIT_MARK
    if cell.failed:
        text += "†"
    return text


PARAMS_HEADER = "params"


def params_text(values: list[int]) -> str:
    """Trainable fusion + head parameters of a row: ``123,456``, a range, or ``--``."""
    if not values:
        return MISSING
    if len(values) == 1:
        return f"{values[0]:,}"
    return f"{values[0]:,}-{values[-1]:,}"


def _header(table: Table, params: bool) -> list[str]:
    return [table.row_axis, *([PARAMS_HEADER] if params else []), *map(str, table.columns)]


def to_markdown(table: Table, digits: int = 2, scale: float = 100.0, params: bool = False) -> str:
    """A GitHub Markdown table with the best cell of each column in bold.

    Args:
        table: The aggregated table.
        digits: Decimals shown.
        scale: Factor applied to the values for display.
        params: Add a column with each row's trainable fusion + head parameters.
    """
    header = _header(table, params)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        texts = [params_text(table.row_params.get(row, []))] if params else []
        for column in table.columns:
            cell = table.cell(row, column)
            text = cell_text(cell, digits, scale)
            texts.append(f"**{text}**" if cell.best else text)
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    lines.append("")
    lines.append(_legend(table, scale, params))
    return "\n".join(lines) + "\n"


INTERVAL_NAMES = {"t": "Student's t", "bootstrap": "percentile bootstrap over seeds"}


def _legend(table: Table, scale: float, params: bool = False) -> str:
    unit = " (x100)" if scale == 100.0 else ""
    spread = "mean ± std"
    if table.interval is not None:
        spread += f" [95 % CI of the mean, {INTERVAL_NAMES[table.interval]}]"
    legend = f"{table.metric}{unit}: {spread} over seeds (n runs); best per column in bold"
    if params:
        legend += "; params: trainable parameters of fusion + head"
    if table.baseline is not None:
        legend += (
            f"; * p < {SIGNIFICANCE} vs {table.baseline} (paired t-test over seeds, "
            "Holm-corrected over the rows of each column)"
        )
    if any(cell.split for cell in table.cells.values()):
        legend += f"; {SPLIT_MARK} seeds split into two distant groups (per-seed CSV)"
    return legend + "; † some runs failed; -- no run."


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
    ):
        text = text.replace(char, escaped)
    return text


def to_latex(table: Table, digits: int = 2, scale: float = 100.0, params: bool = False) -> str:
    """A booktabs ``tabular``; best cells in bold (``textbf``); see :func:`to_markdown`."""
    header = " & ".join(_latex_escape(h) for h in _header(table, params))
    align = "r" if params else ""
    lines = [
        r"\begin{tabular}{l" + align + "c" * len(table.columns) + "}",
        r"\toprule",
        header + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        texts = [params_text(table.row_params.get(row, []))] if params else []
        for column in table.columns:
            cell = table.cell(row, column)
            text = cell_text(cell, digits, scale).replace("±", r"$\pm$")
            text = text.replace("†", r"$^\dagger$").replace("*", r"$^*$")
            text = text.replace(SPLIT_MARK, r"$^\S$")
            texts.append(rf"\textbf{{{text}}}" if cell.best else text)
        lines.append(_latex_escape(str(row)) + " & " + " & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_csv(table: Table, path: Path) -> None:
    """One line per cell with the raw numbers (unscaled), for further analysis.

    The ``metric`` field is the column's own metric key when the columns are different
    metrics (robustness conditions), else the table's metric.
    """
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                table.row_axis,
                table.column_axis or "metric",
                "metric",
                "mean",
                "std",
                "n",
                "failed",
                "best",
                "p_value",
                "p_holm",
                "ci_low",
                "ci_high",
                "split_seeds",
                "params",
            ]
        )
        for row in table.rows:
            params = table.row_params.get(row, [])
            for column in table.columns:
                cell = table.cell(row, column)
                writer.writerow(
                    [
                        row,
                        column,
                        table.column_metrics.get(column, table.metric),
                        "" if math.isnan(cell.mean) else cell.mean,
                        "" if math.isnan(cell.std) else cell.std,
                        cell.n,
                        cell.failed,
                        int(cell.best),
                        "" if cell.p_value is None else cell.p_value,
                        "" if cell.p_adjusted is None else cell.p_adjusted,
                        "" if cell.interval is None else cell.interval[0],
                        "" if cell.interval is None else cell.interval[1],
                        int(cell.split),
                        "|".join(map(str, params)),
                    ]
                )


def write_seed_csv(table: Table, path: Path) -> None:
    """Every seed's value of every cell (unscaled), one line each: what the cells summarise."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([table.row_axis, table.column_axis or "metric", "metric", "seed", "value"])
        for row in table.rows:
            for column in table.columns:
                metric = table.column_metrics.get(column, table.metric)
                for seed, value in sorted(table.cell(row, column).values.items(), key=str):
                    writer.writerow([row, column, metric, seed, value])
