"""``tale run``: the whole pipeline (search, regressor, ONNX, optional SFT, evaluation) in one directory."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from tale.cli.common import DATASET, RISK_OR_NONE, backend_options, ladder_option, setup
from tale.pipeline import PipelineConfig

DEFAULTS = PipelineConfig()
REGRESSOR = DEFAULTS.regressor


def summary_table(summaries: list[dict]) -> str:
    """One line per configuration: what budgets bought against vanilla CoT."""
    lines = ["| model | method | accuracy | mean output tokens | token reduction vs vanilla | within budget | estimator ms/q |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for s in summaries:
        reduction = "" if s["token_reduction"] is None or s["method"] == "vanilla CoT" else f"{s['token_reduction']:.1%}"
        adherence = "" if s["budget_adherence"] is None else f"{s['budget_adherence']:.1%}"
        lines.append(f"| {s['model']} | {s['method']} | {s['accuracy']:.1%} ({s['n']} q) | {s['mean_output_tokens']:.1f} "
                     f"| {reduction} | {adherence} | {1000 * s['estimator_seconds']:.1f} |")
    return "\n".join(lines)


def summary_words(summaries: list[dict]) -> list[str]:
    """What the table shows, in words: each budget-aware row against vanilla CoT on the same questions, and the
    learned budgets against one constant at their mean budget."""
    from tale.eval.paired import Paired

    vanilla = {s["model"]: s for s in summaries if s["method"] == "vanilla CoT"}
    lines = []
    for s in summaries:
        for key, name in (("against_vanilla", "vanilla CoT"), ("against_matched", "one constant budget at their mean")):
            if key not in s:
                continue
            pair = s[key]
            o = vanilla[s["model"]] if key == "against_vanilla" else pair  # the matched pair carries the constant's numbers
            comparison = Paired(**{k: pair[k] for k in ("n", "gained", "lost", "shorter", "longer")})
            fewer = 1 - s["mean_output_tokens"] / o["mean_output_tokens"] if o["mean_output_tokens"] else 0.0
            lines.append(f"{s['model']}: {s['method']} against {name} on the same {comparison.n} questions: "
                         f"{s['accuracy']:.1%} against {o['accuracy']:.1%} accuracy with {abs(fewer):.1%} "
                         f"{'fewer' if fewer >= 0 else 'more'} output tokens; {comparison.describe()}.")
    return lines


@click.command("run")
@click.option("--out", type=click.Path(path_type=Path), default=PipelineConfig.out, show_default=True, help="Run directory; rerun the same command to resume.")
@click.option("--dataset", type=DATASET, default=PipelineConfig.dataset, show_default=True,
              help=("Training questions for the budget search, KIND[:PATH] (as for build); "
                    "arithmetic: reasoning-gym's short arithmetic, generated from --seed."))
@click.option("--eval-dataset", type=DATASET, default=None,
              help="Evaluation questions, KIND[:PATH] [default: the same generator with another seed; required with a data set from a file].")
@click.option("--questions", type=click.IntRange(min=1), default=PipelineConfig.questions, show_default=True, help="Questions to search budgets for.")
@click.option("--eval-questions", type=click.IntRange(min=1), default=PipelineConfig.eval_questions, show_default=True,
              help="Questions per evaluated configuration.")
@click.option("--seed", type=int, default=PipelineConfig.seed, show_default=True)
@click.option("--search", "mode", type=click.Choice(["halving", "elastic", "bisect", "ladder"]), default=DEFAULTS.search.mode,
              show_default=True,
              help=("Budget search (elastic: the labels follow the tokens the reasoner really spends); ladder: success curves "
                    "instead, every question at every --ladder rung, TF-IDF curves, and budgets from the price per token "
                    "chosen on the --calibration share of them (docs/results/success-curves.md)."))
@ladder_option
@click.option("--encoder", default=REGRESSOR.encoder, show_default=True,
              help="The regressor's encoder: 'default' (packaged all-MiniLM-L6-v2), a directory or a hub id.")
@click.option("--epochs", type=click.IntRange(min=1), default=REGRESSOR.epochs, show_default=True, help="Regressor epochs, at most (early stopping).")
@click.option("--max-length", type=click.IntRange(min=8), default=REGRESSOR.max_length, show_default=True,
              help="Regressor: question tokens kept.")
@click.option("--min-feasible", type=click.IntRange(min=1), default=PipelineConfig.min_feasible, show_default=True,
              help="With fewer feasible records the regressor also learns infeasible ones (their vanilla tokens).")
@click.option("--calibration", type=click.FloatRange(0, 0.9), default=PipelineConfig.calibration, show_default=True,
              help=("Share of the searched questions (by id) kept out of the regressor's training to calibrate its budgets on; 0: none. "
                    "With --search ladder: the share the price per token is chosen on."))
@click.option("--risk", type=RISK_OR_NONE, default=str(PipelineConfig.risk), show_default=True,
              help=("Evaluate budgets calibrated to suffice for at least 1 - RISK of new questions; "
                    "'none': the regressor's uncalibrated budgets. A rerun may change it: the finished stages are kept. "
                    "Not used with --search ladder."))
@click.option("--post-train", is_flag=True, help="Also LoRA-SFT the reasoner on the records (budget in the prompt) and evaluate it.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=PipelineConfig.max_new_tokens, show_default=True,
              help="Per answer, in the search and the evaluation.")
@click.option("--pool", type=click.IntRange(min=1), default=PipelineConfig.pool, show_default=True, help="Questions in flight during the search.")
@backend_options
def run(out, dataset, eval_dataset, questions, eval_questions, seed, mode, ladder_text, encoder, epochs, max_length, min_feasible, calibration, risk,
        post_train, max_new_tokens, pool, model, engine, threads, verbose):
    """The main job: search budgets, train and export the regressor, (optionally) post-train the reasoner,
    and measure vanilla CoT against budget-aware reasoning with the regressor's budgets and with one constant
    budget at their mean.

    Every stage is skipped when its output is complete, so the same command resumes. The defaults
    (48 searched and 32 evaluated arithmetic problems) took 14m29s on 2 CPU cores with the ort backend at int8, after
    a first-time model conversion and ONNX build of about 2 minutes (docs/results/main-job.md).

    Example: tale run --dataset gsm8k:path/to/gsm8k/train.jsonl --eval-dataset gsm8k:path/to/gsm8k/test.jsonl
    --questions 64 --eval-questions 50
    """
    from data_builder.ladder import LadderError, parse_ladder

    try:
        ladder = parse_ladder(ladder_text) if mode == "ladder" else None
    except LadderError as error:
        raise click.UsageError(str(error)) from None
    setup(verbose, threads)
    from tqdm import tqdm

    from data_builder.search import SearchConfig
    from predictor.bert import BertRegressorConfig
    from tale.pipeline import PipelineConfig, run_pipeline

    config = PipelineConfig(out=out, dataset=dataset, eval_dataset=eval_dataset, questions=questions,
                            eval_questions=eval_questions, seed=seed, model=model, backend=engine.identity,
                            temperature=engine.temperature,
                            search=SearchConfig(mode=DEFAULTS.search.mode if ladder else mode, max_new_tokens=max_new_tokens),
                            pool=pool, regressor=BertRegressorConfig(encoder=encoder, epochs=epochs, max_length=max_length, seed=seed),
                            min_feasible=min_feasible, calibration=calibration, risk=risk,
                            post_train=post_train, max_new_tokens=max_new_tokens, ladder=ladder)
    backend_for = engine.cached()

    @contextlib.contextmanager
    def progress(description: str, total: int | None):
        with tqdm(total=total, desc=description, unit="q" if total else "it") as bar:
            yield bar

    result = run_pipeline(config, backend_for, progress, echo=click.echo, threads=threads)
    if result.skipped:
        click.echo(f"complete already, skipped: {', '.join(result.skipped)}")
    examples = result.estimator
    if ladder:
        click.echo(f"success curves: TF-IDF on {examples['fit'] + examples['validation']} ladder questions, "
                   f"{examples['policy']} chosen on {examples['validation']} of them")
    else:
        click.echo(f"regressor: trained on {examples.get('n_train')} records"
                   + (f", calibrated on {examples['calibration']} others" if examples.get("calibration") else "")
                   + (" (infeasible ones included: too few feasible)" if examples.get("examples", {}).get("include_infeasible") else ""))
    click.echo("\n" + summary_table(result.summaries))
    for line in summary_words(result.summaries):
        click.echo("\n" + line)
    click.echo(f"\nrun directory {out}: table {result.table}, plot {result.plot}, settings {out / 'config.json'}")
