"""``tale train-curves`` and ``tale frontier``: success curves from ladder labels, and the policies they buy."""

from __future__ import annotations

from pathlib import Path

import click

from predictor.bert_curves import BertCurvesConfig
from tale.cli.common import setup, torch_threads
from tale.eval.frontier import StudyConfig

LADDERS = click.Path(exists=True, file_okay=False, path_type=Path)
STUDY = StudyConfig(train=(Path("."),), test=(Path("."),), out=Path("."))  # the options' defaults
CURVE_ESTIMATORS = ("tfidf", "marginal", "probe", "bert")
BERT = BertCurvesConfig()


@click.command("train-curves")
@click.option("--ladder", "ladders", type=LADDERS, multiple=True, required=True,
              help="Ladder directory from tale build --search ladder (repeat for several).")
@click.option("--estimator", type=click.Choice(CURVE_ESTIMATORS), default="tfidf", show_default=True,
              help=("tfidf: per rung, logistic P(correct) and ridge tokens on the question's TF-IDF; marginal: one curve for all; "
                    "probe: the same regressions on --probe-model's hidden state of the question; bert: --encoder fine-tuned "
                    "with two outputs per rung (tale export makes it ONNX)."))
@click.option("--probe-model", default="default", show_default=True,
              help="probe: the reasoner whose hidden states are read ('default', or the reasoner's directory, e.g. the one the ladder asked).")
@click.option("--encoder", default=BERT.encoder, show_default=True,
              help="bert: the encoder fine-tuned ('default': the packaged all-MiniLM-L6-v2, a directory or a hub id).")
@click.option("--epochs", type=click.IntRange(min=1), default=BERT.epochs, show_default=True, help="bert: epochs at most (early stopping).")
@click.option("--max-length", type=click.IntRange(min=8), default=BERT.max_length, show_default=True, help="bert: question tokens kept.")
@click.option("--seed", type=int, default=BERT.seed, show_default=True, help="bert: head initialization, shuffling and dropout.")
@torch_threads("fine-tunes the encoder (bert) or reads the reasoner (probe)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the curve estimator.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def train_curves(ladders, estimator, probe_model, encoder, epochs, max_length, seed, threads, out, verbose):
    """Learn P(correct | question, rung) and the expected output tokens at each rung from ladder labels.

    Example: tale train-curves --ladder runs/ladder --out runs/curves, then tale evaluate --budget-source price=0.002:runs/curves
    """
    from data_builder.ladder import load_ladder, rung_name
    from predictor.curves import CurveData, MarginalCurves, TfidfCurves

    setup(verbose, threads)
    data = CurveData.of([r for d in ladders for r in load_ladder(d)])
    if len(data) < 2:
        raise click.ClickException(f"{', '.join(map(str, ladders))}: {len(data)} ladder question(s); a curve estimator needs at least 2")
    if estimator == "probe":
        from predictor.curves import ProbeCurves
        from predictor.probe import ProbeConfig

        model = ProbeCurves.fit(data, ProbeConfig(model=probe_model))
    elif estimator == "bert":
        from predictor.bert_curves import BertCurves

        model = BertCurves.fit(data, BertCurvesConfig(encoder=encoder, epochs=epochs, max_length=max_length, seed=seed))
    else:
        model = (TfidfCurves if estimator == "tfidf" else MarginalCurves).fit(data)
    model.save(out)
    mean = data.success.mean(axis=0)
    click.echo(f"{estimator} curves on {len(data)} questions saved to {out}; training accuracy per rung: "
               + ", ".join(f"{rung_name(r)} {a:.1%}" for r, a in zip(data.rungs, mean)))


@click.command("frontier")
@click.option("--train", "train", type=LADDERS, multiple=True, required=True, help="Training ladder directory (repeat).")
@click.option("--test", "test", type=LADDERS, multiple=True, required=True, help="Held-out ladder directory (repeat).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for frontier.json, the plots and the estimators.")
@click.option("--validation", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=STUDY.validation, show_default=True,
              help="Share of training questions on which each policy's setting is chosen.")
@click.option("--resamples", type=click.IntRange(min=100), default=STUDY.resamples, show_default=True, help="Paired bootstrap resamples.")
@click.option("--seed", type=int, default=STUDY.seed, show_default=True)
@click.option("--probe-model", default=STUDY.probe_model,
              help="Also score the reasoner probe on this model's hidden states (the reasoner the ladders asked, e.g. its directory).")
@click.option("--bert-encoder", default=STUDY.bert_encoder,
              help="Also score the BERT curve estimator fine-tuned from this encoder ('default': the packaged MiniLM).")
@click.option("--bert-epochs", type=click.IntRange(min=1), default=STUDY.bert_epochs, show_default=True, help="Its epochs at most.")
@torch_threads("fine-tunes the BERT curve estimator and reads the probe's reasoner")
@click.option("--budgets", "budget_estimators", multiple=True,
              help="Also score a budget estimator (tfidf:DIR%0.1, onnx:DIR, ...): each question on the smallest rung granting its budget.")
def frontier(train, test, out, validation, resamples, seed, probe_model, bert_encoder, bert_epochs, threads, budget_estimators):
    """Score every curve policy and every constant rung on the same held-out ladder outcomes, without generating.

    Example: tale frontier --train runs/ladder-train --test runs/ladder-test --out runs/frontier
    """
    from tale.eval.frontier import run_study

    setup(False, threads)
    report = run_study(StudyConfig(train=tuple(train), test=tuple(test), out=out, validation=validation, resamples=resamples, seed=seed,
                                   probe_model=probe_model, budget_estimators=tuple(budget_estimators), bert_encoder=bert_encoder,
                                   bert_epochs=bert_epochs))
    q = report["questions"]
    click.echo(f"{q['train']} training, {q['validation']} validation, {q['test']} held-out questions")
    for p in report["points"]["constant"]:
        click.echo(f"  constant {p['rung']:>8}: {p['accuracy']:6.1%} at {p['tokens']:6.1f} tokens")
    for name, c in report["comparisons"].items():
        g, s = c["gain"], c["saving"]
        saving = "never reaches it" if s["value"] is None else f"{s['value']:+.1%} [{_num(s['low'])}, {_num(s['high'])}]"
        click.echo(f"  {name:>28} ({report['chosen'].get(name, 'best in hindsight')}): {c['accuracy']:6.1%} at {c['tokens']:6.1f} tokens; "
                   f"vs constants at equal tokens {100 * g['value']:+.1f} points [{_pts(g['low'])}, {_pts(g['high'])}]; "
                   f"tokens saved at the best constant's accuracy {saving}")
    click.echo(f"written to {out / 'frontier.json'} and {out / 'frontier.png'}")


def _num(v):
    return "-" if v is None else f"{v:+.1%}"


def _pts(v):
    return "-" if v is None else f"{100 * v:+.1f}"
