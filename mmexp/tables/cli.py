r"""``mmexp-table``: a folder of runs (or a W&B project) into a paper table.

Examples:
    mmexp-table outputs/train/multiruns/2026-11-23_10-00-00 --rows fusion --cols data.task
    mmexp-table outputs/ --rows fusion --cols data.task --metric test/f1_macro \
        --baseline concat --params --ci t --sort synergy --out tables/fusion
    mmexp-table --wandb my-team/mmexp --group fusion_ablation --rows fusion --cols data.task
    mmexp-table outputs/train/multiruns/2026-11-23_10-00-00 --rows fusion \
        --robustness clean subset:image subset:text RR/missing:text --er-baseline late \
        --robustness-curve missing:text --out tables/robustness
    mmexp-table outputs/interaction_analysis --rows data.task,fusion --scale 1 --digits 3 \
        --analysis test/acc emap/gap pid/model --analysis-plots --out tables/interactions
    mmexp-table outputs/label_budget --rows fusion --cols data.train_fraction --line --logx \
        --ci t --reference published.csv --log-wandb my-team/mmexp --out tables/budget
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmexp.analysis.plot import write_analysis_plots
from mmexp.robustness.plot import plot_curves, save_png
from mmexp.tables.aggregate import SPLIT_GAP, Table, build_columns_table, build_table
from mmexp.tables.analysis import analysis_columns
from mmexp.tables.collect import RunResult, collect_local, collect_wandb, without_pruned
from mmexp.tables.plots import numeric_columns, write_bar_chart, write_line_plot
from mmexp.tables.reference import (
    compare,
    read_reference,
    reference_markdown,
    write_reference_csv,
)
from mmexp.tables.render import to_latex, to_markdown, write_csv, write_seed_csv
from mmexp.tables.robust import condition_metric, robustness_columns, with_effective_robustness
from mmexp.tables.statistics import INTERVALS
from mmexp.tables.wandb_log import log_table_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="mmexp-table", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="folders holding run folders (results.json)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read runs from W&B instead")
    parser.add_argument(
        "--group",
        help="W&B group (study): only its runs are read with --wandb, and the --log-wandb "
        "run joins it",
    )
    parser.add_argument(
        "--rows",
        required=True,
        help="row axis: a config-group choice (fusion) or config key (data.task); several "
        "joined by commas (data.task,fusion) make one",
    )
    parser.add_argument("--cols", default=None, help="column axis (default: one column)")
    parser.add_argument("--metric", default="test/acc", help="metric to tabulate")
    parser.add_argument("--seed-axis", default="seed", help="axis pairing repeated runs")
    parser.add_argument(
        "--mode", choices=("max", "min"), default="max", help="whether higher or lower is better"
    )
    parser.add_argument(
        "--baseline",
        help="row to test the others against (paired t-test over seeds, Holm-corrected "
        "over the rows of each column)",
    )
    parser.add_argument(
        "--ci",
        choices=INTERVALS,
        default=None,
        help="add a 95%% confidence interval of each mean: Student's t or a percentile "
        "bootstrap over seeds (also the chart's error bars)",
    )
    parser.add_argument(
        "--split-gap",
        type=float,
        default=SPLIT_GAP,
        help="mark cells whose seeds fall into two groups at least this far apart "
        "(unscaled metric units; default %(default)s)",
    )
    parser.add_argument(
        "--sort",
        metavar="COLUMN",
        help="order the rows by this column's mean, best first (--mode)",
    )
    parser.add_argument(
        "--range",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=None,
        help="values the metric can take (unscaled), which the chart's error bars stay in; "
        "default: 0 1 for accuracy, F1, AUROC, recall and the like",
    )
    parser.add_argument(
        "--params",
        action="store_true",
        help="add a column with each row's trainable fusion + head parameters",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="CSV",
        help="published numbers (columns row, column, value, source; value in the units "
        "the table shows) printed beside the reproduced cells with their difference: "
        "writes <out>_reference.{md,csv}",
    )
    parser.add_argument(
        "--line",
        action="store_true",
        help="also plot one line per row against the numeric column axis (label budget, "
        "missing rate, width): writes <out>_line.{png,pdf}",
    )
    parser.add_argument("--logx", action="store_true", help="logarithmic x axis for --line")
    parser.add_argument(
        "--log-wandb",
        metavar="ENTITY/PROJECT",
        help="log the table, its charts and every written file to a new W&B run (offline "
        "without an API key)",
    )
    parser.add_argument("--digits", type=int, default=2, help="decimals shown")
    parser.add_argument(
        "--scale",
        type=float,
        default=100.0,
        help="multiply values by this for display (100: percent)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("table"),
        help="output path prefix: writes .md, .tex, .csv, _seeds.csv, .png and .pdf",
    )
    robustness = parser.add_argument_group(
        "robustness", "results of mmexp-eval robustness=<grid> (robustness.json or robust/ keys)"
    )
    robustness.add_argument(
        "--robustness",
        nargs="+",
        metavar="CONDITION",
        help="one column per condition (subset:image, missing:text@0.5), per level of a curve "
        "(missing:text, noise:image/gaussian_noise) or summary (RR/<curve>, ER/<curve>), "
        "of --metric without test/; replaces --cols",
    )
    robustness.add_argument(
        "--er-baseline",
        metavar="ROW",
        help="compute ER/<curve> of each run against the run of this row with the same "
        "seed (and --cols value), from their robustness.json",
    )
    robustness.add_argument(
        "--robustness-curve",
        nargs="+",
        default=[],
        metavar="CURVE",
        help="also plot the curve, one line per row (mean ± std over seeds): "
        "writes <out>_curve_<curve>.png",
    )
    analysis = parser.add_argument_group(
        "analysis", "results of analysis=[contribution,emap,pid] (analysis.json or analysis/ keys)"
    )
    analysis.add_argument(
        "--analysis",
        nargs="+",
        metavar="KEY",
        help="one column per key: a metric of the runs (test/acc), an analysis key "
        "(emap/gap, contribution/shapley/text, pid/data/synergy) or a group (pid/model: R, "
        "U, S; contribution/shapley: one per modality); replaces --cols",
    )
    analysis.add_argument(
        "--analysis-plots",
        action="store_true",
        help="also plot per row the Shapley values, the PID of model and data (stacked, "
        "bits) and the EMAP gap: writes <out>_{shapley,pid_model,pid_data,emap}.png",
    )
    args = parser.parse_args(argv)
    if not args.runs and not args.wandb:
        parser.error("give one or more run folders, or --wandb ENTITY/PROJECT")
    if args.robustness and args.cols:
        parser.error("--robustness puts the conditions in the columns: drop --cols")
    if args.analysis and args.cols:
        parser.error("--analysis puts the keys in the columns: drop --cols")
    if args.analysis and args.robustness:
        parser.error("--analysis and --robustness both choose the columns: give one")
    if args.logx and not args.line:
        parser.error("--logx is the x axis of --line: add --line")
    return args


def curve_path(out: Path, curve: str) -> Path:
    """``<out>_curve_<curve>.png`` with ``:`` and ``/`` of the curve name as ``-``."""
    slug = curve.replace(":", "-").replace("/", "-")
    return out.with_name(f"{out.name}_curve_{slug}.png")


def _table(args: argparse.Namespace, runs: list[RunResult]) -> Table:
    if args.analysis:
        columns = analysis_columns(runs, args.analysis)
        return build_columns_table(
            runs,
            columns,
            args.rows,
            args.seed_axis,
            args.mode,
            args.baseline,
            "analysis",
            absent_is_failure=False,
            interval=args.ci,
            split_gap=args.split_gap,
        )
    if not args.robustness:
        return build_table(
            runs,
            args.metric,
            args.rows,
            args.cols,
            args.seed_axis,
            args.mode,
            args.baseline,
            interval=args.ci,
            split_gap=args.split_gap,
        )
    metric = condition_metric(args.metric)
    columns = robustness_columns(runs, args.robustness, metric)
    return build_columns_table(
        runs,
        columns,
        args.rows,
        args.seed_axis,
        args.mode,
        args.baseline,
        f"{metric} by robustness condition",
        interval=args.ci,
        split_gap=args.split_gap,
    )


def sort_rows(table: Table, column: str, mode: str) -> None:
    """Order the rows by ``column``'s mean, best first; rows without a value last.

    Raises:
        ValueError: ``column`` is not a column of the table (the message lists them).
    """
    matches = [c for c in table.columns if str(c) == column]
    if not matches:
        raise ValueError(f"--sort {column!r}: not a column; choose one of {table.columns}")
    sign = -1.0 if mode == "max" else 1.0

    def key(row: object) -> tuple[bool, float]:
        cell = table.cell(row, matches[0])
        return (cell.n == 0, sign * cell.mean if cell.n else 0.0)

    table.rows = sorted(table.rows, key=key)


def main(argv: list[str] | None = None) -> int:
    """Build the table, print the Markdown version and write all formats."""
    args = parse_args(argv)
    runs = collect_wandb(args.wandb, args.group) if args.wandb else collect_local(args.runs)
    runs, pruned = without_pruned(runs)
    if args.er_baseline is not None:
        pair = [args.seed_axis, *([args.cols] if args.cols else [])]
        runs = with_effective_robustness(runs, args.rows, args.er_baseline, pair)
    table = _table(args, runs)
    if args.sort is not None:
        sort_rows(table, args.sort, args.mode)
    # before anything is written: a bad reference file names its line, a column axis that
    # cannot be plotted says so, and nothing is written
    if args.line:
        numeric_columns(table, args.logx)
    references = read_reference(args.reference) if args.reference else None
    comparisons = compare(table, references, args.reference, args.scale) if references else None
    markdown = to_markdown(table, args.digits, args.scale, args.params)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [out.with_suffix(".md"), out.with_suffix(".tex"), out.with_suffix(".csv")]
    written[0].write_text(markdown)
    written[1].write_text(to_latex(table, args.digits, args.scale, args.params))
    write_csv(table, written[2])
    written.append(out.with_name(f"{out.name}_seeds.csv"))
    write_seed_csv(table, written[-1])
    value_range = tuple(args.range) if args.range else None
    written += write_bar_chart(table, out.with_suffix(".png"), args.scale, value_range)
    if args.line:
        line_path = out.with_name(f"{out.name}_line.png")
        written += write_line_plot(table, line_path, args.scale, value_range, args.logx)
    sys.stdout.write(markdown)
    if comparisons is not None:
        reference_text = reference_markdown(comparisons, table, args.digits)
        written.append(out.with_name(f"{out.name}_reference.md"))
        written[-1].write_text(reference_text)
        written.append(out.with_name(f"{out.name}_reference.csv"))
        write_reference_csv(comparisons, table, written[-1])
        sys.stdout.write("\n" + reference_text)
    for curve in args.robustness_curve:
        figure = plot_curves(
            runs, curve, condition_metric(args.metric), args.rows, args.seed_axis, args.scale
        )
        png = save_png(figure, curve_path(out, curve))
        figure.savefig(png.with_suffix(".pdf"))
        written += [png, png.with_suffix(".pdf")]
    if args.analysis_plots:
        plots, skipped = write_analysis_plots(runs, out, args.rows, args.seed_axis, args.scale)
        written += plots
        if skipped:
            sys.stdout.write(f"no analysis results for: {', '.join(skipped)}\n")
    left_out = f" ({pruned} pruned Optuna trials left out)" if pruned else ""
    sys.stdout.write(f"written from {len(runs)} runs{left_out}:\n")
    sys.stdout.writelines(f"  {path}\n" for path in written)
    if args.log_wandb:
        folder = log_table_files(
            args.log_wandb,
            written,
            written[2],
            out.name,
            group=args.group,
            config={key: str(value) for key, value in vars(args).items()},
            folder=out.parent,
        )
        sys.stdout.write(f"logged to W&B: {folder}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
