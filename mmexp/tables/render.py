"""Write a :class:`~mmexp.tables.aggregate.Table` as Markdown, LaTeX, CSV and a bar chart."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mmexp.tables.aggregate import Cell, Table

SIGNIFICANCE = 0.05
MISSING = "--"


def cell_text(cell: Cell, digits: int, scale: float) -> str:
    """``mean ± std (n)``, ``failed`` when every run failed, ``--`` when there is no run.

    A dagger marks cells with some failed runs; an asterisk a significant difference from
    the baseline row (paired t-test, p < 0.05).
    """
    if cell.n == 0:
        return "failed" if cell.failed else MISSING
    text = f"{cell.mean * scale:.{digits}f} ± {cell.std * scale:.{digits}f} ({cell.n})"
    if cell.p_value is not None and cell.p_value < SIGNIFICANCE:
        text += "*"
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


def _legend(table: Table, scale: float, params: bool = False) -> str:
    unit = " (x100)" if scale == 100.0 else ""
    legend = f"{table.metric}{unit}: mean ± std over seeds (n runs); best per column in bold"
    if params:
        legend += "; params: trainable parameters of fusion + head"
    if table.baseline is not None:
        legend += f"; * p < {SIGNIFICANCE} vs {table.baseline} (paired t-test over seeds)"
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
                        "|".join(map(str, params)),
                    ]
                )


def write_bar_chart(table: Table, path: Path, scale: float = 100.0) -> None:
    """Grouped bars (one group per column, one bar per row) with standard-deviation bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters and CI
    import matplotlib.pyplot as plt

    width = 0.8 / max(len(table.rows), 1)
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(table.columns) + 2), 3.2))
    for index, row in enumerate(table.rows):
        cells = [table.cell(row, column) for column in table.columns]
        positions = [
            c + (index - (len(table.rows) - 1) / 2) * width for c in range(len(table.columns))
        ]
        means = [cell.mean * scale if cell.n else 0.0 for cell in cells]
        errors = [cell.std * scale if cell.n else 0.0 for cell in cells]
        axes.bar(positions, means, width, yerr=errors, capsize=3, label=str(row))
    axes.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
    axes.set_ylabel(table.metric + (" (x100)" if scale == 100.0 else ""))
    axes.legend(
        title=table.row_axis,
        fontsize="small",
        frameon=False,
        bbox_to_anchor=(1.0, 1.0),
        loc="upper left",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
