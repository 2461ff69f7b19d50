"""An ablation grid (data sets x models x methods and budget sources) and the report over it.

Every configuration is one ``tale.eval.evaluate`` run in ``OUT/runs/``, so a grid resumes per question and
``tale evaluate`` runs into the same directory join the report. ``write_report(OUT)`` summarizes
every run found there:

- ``OUT/summary.json``: every run's settings and ``Summary``;
- ``OUT/table.md``: the paper's Table 3 shape (rows: methods and budget sources; a column per data
  set holding accuracy / mean output tokens / expense), then the details of every run;
- ``OUT/accuracy_vs_tokens.png``: accuracy against output tokens, one point per configuration.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from data_builder.sources import Problem
from reasoner.errors import ConfigError
from reasoner.prompts import Method
from tale.eval.evaluate import METHODS, EvalConfig, EvalResult, Prices, collect, evaluate
from tale.eval.runs import EvalRow, dataset_label, run_dirs, short_label
from tale.eval.sources import BackendFor, BudgetSource, build_source

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

TABLE_FILE, SUMMARY_FILE, PLOT_FILE = "table.md", "summary.json", "accuracy_vs_tokens.png"
_METHOD_NAMES = {"direct": "Direct", "vanilla": "Vanilla CoT"}


@dataclass(frozen=True)
class AblationConfig:
    """A grid of configurations: ``base`` holds every setting the runs share (its own data set, model, method and
    budget source are replaced by each cell's), the other fields are the grid's axes."""

    base: EvalConfig  # out, backend, split, limit, seed, shard, max_new_tokens, temperature, prices, ... for every run
    datasets: tuple[str, ...]  # KIND[:PATH] each
    models: tuple[str, ...] = ("default",)
    methods: tuple[Method, ...] = METHODS  # budget runs once per budget source
    budget_sources: tuple[str, ...] = ()

    @property
    def out(self) -> Path:
        return self.base.out

    @property
    def prices(self) -> Prices | None:
        return self.base.prices

    def __post_init__(self) -> None:
        if not self.datasets or not self.models:
            raise ConfigError("an ablation needs at least one data set and one model")
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ConfigError(f"methods must be among {METHODS}, got {self.methods!r}")
        if ("budget" in self.methods) != bool(self.budget_sources):
            raise ConfigError("method 'budget' needs budget sources, and budget sources need method 'budget'")

    def configs(self) -> list[EvalConfig]:
        """Model by model, data set by data set; vanilla first, so later runs find their baseline."""
        order = sorted(self.methods, key=("vanilla", "direct", "budget").index)
        configs = []
        for model in self.models:
            for dataset in self.datasets:
                for method in order:
                    sources: Sequence[str | None] = self.budget_sources if method == "budget" else [None]
                    configs += [replace(self.base, dataset=dataset, model=model, method=method, budget_source=s) for s in sources]
        return configs


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    plot: Path


def ablate(
    config: AblationConfig,
    backend_for: BackendFor,
    *,
    on_run: Callable[[EvalConfig], None] | None = None,
    on_row: Callable[[EvalRow], None] | None = None,
) -> ReportFiles:
    """Run (or resume) every configuration of the grid, then write the report over ``config.out``.

    ``backend_for(model)`` gives the reasoner and the zero-shot estimators' models; call it with a
    cache so each model loads once. Estimators are built once and shared across models, except a
    bare ``llm``, which asks each reasoner for its own budgets.
    """
    problems: dict[str, list[Problem]] = {}
    sources: dict[tuple[str, str], BudgetSource] = {}
    for run in config.configs():
        backend = backend_for(run.model)
        if run.data not in problems:
            problems[run.data] = run.problems()
        source = None
        if run.budget_source is not None:
            key = (run.budget_source, run.model if run.budget_source == "llm" else "")
            if key not in sources:
                sources[key] = build_source(run.budget_source, reasoner=backend, backend_for=backend_for,
                                            llm_default=run.llm_default)
            source = sources[key]
        if on_run:
            on_run(run)
        evaluate(run, backend, source, problems=problems[run.data], on_row=on_row)
    return write_report(config.out, config.prices)


def collect_all(out: Path, prices: Prices | None = None) -> list[EvalResult]:
    """Every run in ``out``, summarized at ``prices``."""
    return [collect(run_dir, prices=prices) for run_dir in run_dirs(out)]


def write_report(out: Path, prices: Prices | None = None) -> ReportFiles:
    """``summary.json``, ``table.md`` and ``accuracy_vs_tokens.png`` over every run in ``out``."""
    out = Path(out)
    results = _ordered(collect_all(out, prices))
    files = ReportFiles(out / TABLE_FILE, out / SUMMARY_FILE, out / PLOT_FILE)
    data = {"prices": None if prices is None else asdict(prices),
            "runs": [json.loads((r.run_dir / "summary.json").read_text()) for r in results]}
    files.json.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    files.markdown.write_text(markdown_report(results, prices))
    plot(results, files.plot)
    return files


def row_label(config: EvalConfig) -> str:
    """The method, and for budget-aware runs the budget source; a bare ``llm`` (the reasoner estimates
    its own budgets) is named by its model, so one estimator gets one label whichever reasoner it serves."""
    if config.budget_source is None:
        return _METHOD_NAMES[config.method]
    source = f"llm:{config.model}" if config.budget_source == "llm" else config.budget_source  # stripped by EvalConfig
    return f"TALE-EP ({short_label(source)})"


def row_labels(results: Sequence[EvalResult]) -> dict[Path, str]:
    """``row_label`` by run directory, except that oracle runs share one "TALE-EP (oracle)" row: each data
    set brings its own searched records, so naming them would split one method over several rows. If two
    oracle runs of one model answer the same data set, every oracle run keeps its records' name instead."""
    labels = {r.run_dir: row_label(r.config) for r in results}
    oracle = [r for r in results if (r.config.budget_source or "").startswith("oracle:")]
    cells = [(short_label(r.config.model), r.config.data) for r in oracle]
    if len(cells) == len(set(cells)):
        labels.update({r.run_dir: "TALE-EP (oracle)" for r in oracle})
    return labels


def _ordered(results: Sequence[EvalResult]) -> list[EvalResult]:
    rank = {"direct": 0, "vanilla": 1, "budget": 2}
    return sorted(results, key=lambda r: (r.config.model, rank[r.config.method], r.config.budget_source or "",
                                          r.config.data))


def _cell(result: EvalResult | None) -> str:
    if result is None:
        return ""
    s = result.summary
    expense = "n/a" if s.expense_per_sample is None else f"{s.expense_per_sample * 1e5:.2f}"
    return f"{s.accuracy:.2%} / {s.mean_output_tokens:.2f} / {expense}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def markdown_report(results: Sequence[EvalResult], prices: Prices | None) -> str:
    """The Table 3 shaped table, with an average column where a row has every data set, and the details."""
    datasets = list(dict.fromkeys(r.config.data for r in results))
    labels = row_labels(results)
    rows: dict[tuple[str, str], dict[str, EvalResult]] = {}
    for r in results:
        rows.setdefault((short_label(r.config.model), labels[r.run_dir]), {})[r.config.data] = r
    price = ("expense in 1e-5 $ per sample at ${:g} / ${:g} per million input / output tokens, estimation "
             "included".format(prices.input_per_million, prices.output_per_million) if prices
             else "expense n/a: give --price-in and --price-out")
    lines = ["# Accuracy / mean output tokens / expense", "",
             f"Mean output tokens: the reasoner's, over all samples; {price}.", "",
             "| method | model | " + " | ".join(dataset_label(d) for d in datasets) + " | average |",
             "|---|---|" + "---|" * (len(datasets) + 1)]
    for (model, label), cells in rows.items():
        lines.append(f"| {label} | {model} | " + " | ".join(_cell(cells.get(d)) for d in datasets)
                     + f" | {_average(cells, datasets)} |")
    lines += ["", "## Every run", "",
              "| data set | model | method | n | accuracy | output tokens / q | estimator tokens / q | total tokens / q "
              "| reduction vs vanilla (output / total) | within budget | no-budget fallbacks | default budgets "
              "| expense $ | wall s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r.summary
        n = s.n or 1
        done = f"{s.n}" if r.complete else f"{s.n} of {r.questions}"
        reduction = "" if s.token_reduction is None else f"{_pct(s.token_reduction)} / {_pct(s.total_token_reduction)}"
        lines.append(
            f"| {dataset_label(r.config.data)} | {short_label(r.config.model)} | {labels[r.run_dir]} | {done} "
            f"| {s.accuracy:.2%} | {s.mean_output_tokens:.1f} | {s.estimator_tokens:.1f} | {s.total_tokens / n:.1f} "
            f"| {reduction} | {_pct(s.budget_adherence)} | {s.no_budget_fallbacks} | {s.default_budgets} "
            f"| {'' if s.expense is None else f'{s.expense:.6f}'} | {s.wall_seconds:.2f} |")
    return "\n".join(lines) + "\n"


def _average(cells: dict[str, EvalResult], datasets: Sequence[str]) -> str:
    if len(datasets) < 2 or any(d not in cells for d in datasets):
        return ""
    summaries = [cells[d].summary for d in datasets]
    accuracy = sum(s.accuracy for s in summaries) / len(summaries)
    tokens = sum(s.mean_output_tokens for s in summaries) / len(summaries)
    expenses = [s.expense_per_sample for s in summaries]
    expense = "n/a" if None in expenses else f"{sum(expenses) / len(expenses) * 1e5:.2f}"  # type: ignore[arg-type]
    return f"{accuracy:.2%} / {tokens:.2f} / {expense}"


MARKERS = "osD^v<>pP*Xhd"
LEGEND_WIDTH = 48  # characters of a legend label; longer ones keep their head and tail (a run name's hash)


def legend_label(label: str, width: int = LEGEND_WIDTH) -> str:
    """``label`` cut to ``width`` characters in the middle, so a legend beside the panels stays narrow."""
    if len(label) <= width:
        return label
    head = (width - 1) // 2
    return f"{label[:head]}…{label[-(width - 1 - head):]}"


def accuracy_figure(results: Sequence[EvalResult]) -> Figure:
    """Accuracy against the reasoner's mean output tokens: a panel per data set, a point per configuration;
    the marker tells the method and budget source, the colour the model (two legends beside the panels).
    A hollow marker is a run that has not answered all its questions yet."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg
    from matplotlib.lines import Line2D

    ordered = _ordered(results)
    datasets = list(dict.fromkeys(r.config.data for r in ordered))
    names = row_labels(ordered)
    labels = {label: MARKERS[i % len(MARKERS)] for i, label in enumerate(dict.fromkeys(names[r.run_dir] for r in ordered))}
    models = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(short_label(r.config.model) for r in ordered))}
    figure = Figure(figsize=(4.5 * max(len(datasets), 1) + 4, 4.5), dpi=100, layout="constrained")
    panels = figure.subplots(1, max(len(datasets), 1), squeeze=False, sharey=True)[0]
    for axes, dataset in zip(panels, datasets):
        for r in (r for r in ordered if r.config.data == dataset):
            color, done = models[short_label(r.config.model)], r.complete
            axes.scatter([r.summary.mean_output_tokens], [100 * r.summary.accuracy], marker=labels[names[r.run_dir]],
                         facecolors=color if done else "none", edgecolors="black" if done else color,
                         s=50, linewidths=0.5 if done else 1.5)
        axes.set(title=dataset_label(dataset), xlabel="reasoner output tokens per question")
        axes.set_xlim(left=0)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("accuracy (%)")
    # over the panels, left: a centred title runs into the legends when they are wider than the panels
    figure.suptitle("Accuracy against output tokens" + ("" if all(r.complete for r in ordered) else " (hollow: run not finished)"),
                    x=0.01, ha="left")
    method = [Line2D([], [], ls="", marker=m, color="gray", label=legend_label(label)) for label, m in labels.items()]
    model = [Line2D([], [], ls="", marker="o", color=c, label=name) for name, c in models.items()]
    if method:
        figure.legend(handles=method, title="method", loc="outside right upper", fontsize=7, title_fontsize=8)
        figure.legend(handles=model, title="model", loc="outside right lower", fontsize=7, title_fontsize=8)
    return figure


def plot(results: Sequence[EvalResult], path: Path) -> Path:
    """Save ``accuracy_figure(results)`` as a PNG."""
    accuracy_figure(results).savefig(path)
    return path
