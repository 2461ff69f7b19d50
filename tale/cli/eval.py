"""``tale evaluate`` and ``tale ablate``: accuracy, tokens and dollars per method and budget source.

Plain click commands; ``tale.cli`` registers them on the ``tale`` group.
"""

from __future__ import annotations

from pathlib import Path

import click

from predictor.llm import LLMEstimatorConfig
from reasoner.backends import MAX_NEW_TOKENS
from tale.cli.common import BUDGET_SOURCE, DATASET, SHARD, backend_options, setup

SOURCE_HELP = ("oracle:RECORDS_DIR (searched budgets), llm[:MODEL] (zero-shot; no MODEL: the reasoner itself), "
               "bert:DIR, onnx:DIR, constant:DIR, tfidf:DIR (saved estimators; append @FACTOR to scale their budgets, "
               "e.g. onnx:DIR@1.41), fixed:N, matched:RUN_DIR (a constant at that evaluation run's mean budget) or "
               "replay:RUN_DIR (each question's budget in that run)")


def _shared_options(command):
    """Options evaluate and ablate share, besides the backend's."""
    for option in reversed([
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N problems (after shuffling, with --seed)."),
        click.option("--seed", type=int, default=None, help="Shuffle the problems with this seed before --limit."),
        click.option("--shard", type=SHARD, default=None,
                     help=("I/N: only the problems in slice I of N by id hash (after --limit), the slice `tale build --shard I/N` "
                           "takes: e.g. search budgets on 0/2 and evaluate on 1/2 of a data set with no training split.")),
        click.option("--split", default="test", show_default=True, help="Split, for hub data sets."),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=MAX_NEW_TOKENS, show_default=True),
        click.option("--llm-default", type=click.IntRange(min=1), default=None,
                     help=f"Zero-shot estimator: the budget for a reply that states none [default: {LLMEstimatorConfig.default_budget}]."),
        click.option("--price-in", type=click.FloatRange(min=0), default=None, help="$ per million input tokens (reasoner and estimator prompts)."),
        click.option("--price-out", type=click.FloatRange(min=0), default=None, help="$ per million output tokens (reasoner and estimator replies)."),
    ]):
        command = option(command)
    return command


def _prices(price_in, price_out):
    from tale.eval.evaluate import Prices

    if (price_in is None) != (price_out is None):
        raise click.UsageError("give both --price-in and --price-out, or neither")
    return None if price_in is None else Prices(price_in, price_out)


def _progress(bar):
    def on_row(row) -> None:
        bar.update(1)
        budget = "" if row.budget is None else f"budget {row.budget:4d}  "
        mark = "correct" if row.correct else "wrong  "
        bar.write(f"{mark} {row.output_tokens:5d} tokens  {budget}predicted={row.predicted!s:>8}  gold={row.gold:>8}  {row.id}")

    return on_row


@click.command("evaluate")
@click.option("--dataset", type=DATASET, required=True,
              help="KIND[:PATH]: gsm8k, gsm8k_zero, mathbench, generated, jsonl; e.g. gsm8k:path/to/gsm8k/test.jsonl.")
@click.option("--method", type=click.Choice(["direct", "vanilla", "budget"]), default=None,
              help="[default: budget with --budget-source, else vanilla]")
@click.option("--budget-source", type=BUDGET_SOURCE, default=None, help=SOURCE_HELP)
@click.option("--baseline", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help=("A vanilla run directory (OUT/runs/NAME) for the token reduction "
                    "[default: the vanilla run of the same data set and model in --out]."))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval"), show_default=True,
              help=("Evaluation directory: runs/NAME/ per configuration (resumes), "
                    "and table.md, summary.json, accuracy_vs_tokens.png over all of them."))
@_shared_options
@backend_options
def evaluate(dataset, method, budget_source, baseline, out, limit, seed, shard, split, max_new_tokens, llm_default, price_in,
             price_out, model, engine, threads, verbose):
    """Evaluate one method on one data set: accuracy, output tokens, estimation cost, expense.

    Example: tale evaluate --dataset gsm8k:path/to/gsm8k/test.jsonl --limit 50 --budget-source fixed:64 --price-in 0.15 --price-out 0.6
    """
    setup(verbose, threads)
    from tqdm import tqdm

    from tale.eval.ablate import write_report
    from tale.eval.evaluate import EvalConfig
    from tale.eval.evaluate import evaluate as run_evaluation
    from tale.eval.sources import build_source

    method = method or ("budget" if budget_source else "vanilla")
    config = EvalConfig(dataset=dataset, out=out, method=method, budget_source=budget_source, model=model,
                        backend=engine.identity, split=split, limit=limit, seed=seed, shard=shard and str(shard),
                        max_new_tokens=max_new_tokens,
                        temperature=engine.temperature, sampling_seed=engine.sampling_seed, llm_default=llm_default,
                        chunk=engine.chunk, prices=_prices(price_in, price_out))
    backend_for = engine.cached()
    backend = backend_for(model)
    source = None
    if budget_source:
        source = build_source(budget_source, reasoner=backend, backend_for=backend_for, llm_default=llm_default)
    with tqdm(desc=f"{config.label} {dataset}", unit="q") as bar:
        result = run_evaluation(config, backend, source, baseline=baseline, on_row=_progress(bar))
    files = write_report(out, config.prices)
    s = result.summary
    click.echo(f"\n{s.n} questions, {config.label}, model {model}: accuracy {s.accuracy:.1%}, mean output tokens "
               f"{s.mean_output_tokens:.1f} (over all samples), estimator tokens {s.estimator_tokens:.1f} per question")
    if s.budget_adherence is not None:
        click.echo(f"within budget: {s.budget_adherence:.1%} of {s.budgeted}; no-budget fallbacks "
                   f"{s.no_budget_fallbacks}, default budgets {s.default_budgets}")
    if s.token_reduction is not None:
        click.echo(f"token reduction against vanilla: {s.token_reduction:.1%} output, {s.total_token_reduction:.1%} total")
    if s.expense is not None:
        click.echo(f"expense: ${s.expense:.6f} ({s.expense_per_sample * 1e5:.2f} x 1e-5 $ per sample)")
    click.echo(f"rows in {result.run_dir}; report over {out}: {files.markdown}, {files.json}, {files.plot}")


@click.command("ablate")
@click.option("--dataset", "datasets", type=DATASET, multiple=True, required=True, help="KIND[:PATH] (repeat for several).")
@click.option("--budget-source", "budget_sources", type=BUDGET_SOURCE, multiple=True, help=f"Repeat for several: {SOURCE_HELP}.")
@click.option("--methods", default="direct,vanilla,budget", show_default=True, help="Comma-separated; budget runs once per --budget-source.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/ablate"), show_default=True,
              help="Evaluation directory: runs/NAME/ per configuration (resumes), table.md, summary.json, accuracy_vs_tokens.png.")
@_shared_options
@backend_options(multiple_models=True)
def ablate(datasets, budget_sources, methods, out, limit, seed, shard, split, max_new_tokens, llm_default, price_in, price_out,
           model, engine, threads, verbose):
    """Evaluate a grid: data sets x models x methods and budget sources, into one table and plot.

    Example: tale ablate --dataset gsm8k:path/to/gsm8k/test.jsonl --dataset mathbench:path/to/mathbench/middle
    --budget-source oracle:runs/records --budget-source bert:runs/predictor --budget-source llm --limit 50 --price-in 0.15 --price-out 0.6
    """
    setup(verbose, threads)
    from tqdm import tqdm

    from tale.eval.ablate import AblationConfig
    from tale.eval.ablate import ablate as run_ablation
    from tale.eval.evaluate import METHODS, EvalConfig

    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not chosen or any(m not in METHODS for m in chosen):
        raise click.BadParameter(f"expected comma-separated methods among {', '.join(METHODS)}, got {methods!r}", param_hint="--methods")
    if budget_sources and "budget" not in chosen:
        chosen += ("budget",)
    if not budget_sources:
        chosen = tuple(m for m in chosen if m != "budget")
    base = EvalConfig(dataset=datasets[0], out=out, backend=engine.identity, split=split, limit=limit, seed=seed,
                      shard=shard and str(shard), max_new_tokens=max_new_tokens, temperature=engine.temperature,
                      sampling_seed=engine.sampling_seed, llm_default=llm_default, chunk=engine.chunk,
                      prices=_prices(price_in, price_out))
    config = AblationConfig(base=base, datasets=datasets, models=tuple(model), methods=chosen, budget_sources=budget_sources)
    configs = config.configs()
    backend_for = engine.cached()
    with tqdm(desc="questions", unit="q") as bar:
        def on_run(run) -> None:
            bar.write(f"-- {run.label} on {run.dataset} with {run.model}")

        files = run_ablation(config, backend_for, on_run=on_run, on_row=_progress(bar))
    click.echo(files.markdown.read_text())
    click.echo(f"{len(configs)} configurations; report in {files.markdown}, {files.json}, {files.plot}")
