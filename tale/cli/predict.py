"""``tale train-predictor`` and ``tale eval-predictor``: learn budgets from records, compare estimators."""

from __future__ import annotations

from pathlib import Path

import click

from predictor.bert import BertRegressorConfig
from predictor.calibrate import REPORTED_ALPHAS
from predictor.data import ExampleConfig
from tale.cli.common import EXCLUDE, RISKS, EngineOptions, backend_options, excluded_ids, setup, torch_threads

RECORDS = click.Path(exists=True, file_okay=False, path_type=Path)
BERT, EXAMPLES = BertRegressorConfig(), ExampleConfig()  # the options' defaults


@click.command("train-predictor")
@click.option("--records", type=RECORDS, multiple=True, required=True, help="Records directory (repeat for several).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the trained regressor.")
@click.option("--encoder", default=BERT.encoder, show_default=True,
              help="'default' (the packaged all-MiniLM-L6-v2), a local BERT-family model directory or a hub id.")
@click.option("--epochs", type=click.IntRange(min=1), default=BERT.epochs, show_default=True,
              help="At most; early stopping on validation loss ends sooner.")
@click.option("--learning-rate", type=float, default=BERT.learning_rate, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=BERT.batch_size, show_default=True)
@click.option("--max-length", type=click.IntRange(min=8), default=BERT.max_length, show_default=True, help="Question tokens kept.")
@click.option("--held-out", type=click.FloatRange(0, 0.9), default=EXAMPLES.held_out_fraction, show_default=True,
              help="Share of problem ids kept out for eval-predictor.")
@click.option("--include-infeasible", is_flag=True, help="Train on infeasible records too, with their vanilla tokens as the budget.")
@click.option("--calibration", type=click.FloatRange(0, 0.9), default=EXAMPLES.calibration_fraction, show_default=True,
              help=("Share of the training ids kept out of training to calibrate the budgets on "
                    "(tale_calibration.json; then bert:DIR%ALPHA). 0: no calibration."))
@click.option("--skip-bad", is_flag=True, help="Skip and count bad records instead of stopping.")
@click.option("--seed", type=int, default=BERT.seed, show_default=True)
@EXCLUDE
@torch_threads("trains the regressor")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def train_predictor(records, out, encoder, epochs, learning_rate, batch_size, max_length, held_out, include_infeasible,
                    calibration, skip_bad, seed, exclude, threads, verbose):
    """Fine-tune a BERT-family regressor on searched budgets (log-budget, early stopping, clamped).

    Example: tale train-predictor --records runs/records --out runs/predictor
    """
    setup(verbose, threads)
    from predictor.bert import BertRegressorConfig, train_regressor
    from predictor.data import ExampleConfig

    config = BertRegressorConfig(encoder=encoder, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                                 max_length=max_length, seed=seed)
    examples = ExampleConfig(include_infeasible=include_infeasible, skip_bad=skip_bad, held_out_fraction=held_out,
                             calibration_fraction=calibration, exclude_ids=excluded_ids(exclude))
    model = train_regressor(list(records), out, config, examples)
    meta = model.meta.to_json()
    click.echo(f"trained on {meta['n_train']} examples (validation {meta['n_validation']}), "
               f"best validation loss {meta.get('best_validation_loss')}; saved to {out}")
    if calibration:
        click.echo(f"calibrated on {meta['data']['calibration']} feasible records kept out of training: use bert:{out}%ALPHA")


def _report_coverage(chosen: dict, calibrating, scored, alphas: tuple[float, ...], out: Path) -> None:
    """Calibrate each estimator on ``calibrating`` and report coverage and cost on ``scored`` at each risk of ``alphas``."""
    from predictor.coverage import coverage_rows, coverage_table, write_coverage

    if not calibrating:
        raise click.ClickException("--calibration leaves no feasible record to calibrate on; raise it or add records")
    rows = []
    for name, estimator in chosen.items():
        # The zero-shot estimator has only rounded budgets, and pays for each again: counted in its report row.
        cal = estimator.predict_float([e.question for e in calibrating])
        test = estimator.predict_float([e.question for e in scored])
        rows += coverage_rows(name, cal, [e.budget for e in calibrating], test, [e.budget for e in scored], alphas)
    markdown, _, plot = write_coverage(rows, out)
    click.echo(coverage_table(rows))
    click.echo(f"calibrated on {len(calibrating)} records, tested on {len(scored)}: {markdown}, {plot}")


def _estimators(names: str, split, engine: EngineOptions, llm_default: int | None, probe_model: str = "default"):
    """Name -> estimator, from ``bert:DIR``, ``onnx:DIR``, ``llm:MODEL``, ``constant[:DIR]``, ``tfidf[:DIR]``."""
    from tale.eval.sources import build_estimator

    backend_for = engine.cached()

    chosen = {}
    for name in (n.strip() for n in names.split(",") if n.strip()):
        chosen[name] = build_estimator(name, backend_for=backend_for, train=split.train, llm_default=llm_default,
                                       probe_model=probe_model)
    return chosen


def _fold_factories(names: str, engine: EngineOptions, llm_default: int | None, bert_config):
    """Name -> a function training that estimator on a fold's training part (cross-validation)."""
    from predictor import Aimed
    from predictor.bert import BertRegressor
    from predictor.data import fingerprint
    from tale.eval.sources import build_estimator, split_aim

    backend_for = engine.cached()
    fitted: dict[str, BertRegressor] = {}  # by the fold's training fingerprint: bert and bert@F share one fit

    def factory(name: str):
        base, aim = split_aim(name)
        kind, _, arg = base.partition(":")
        if kind == "bert" and not arg:
            def fit(train):
                key = fingerprint(train)
                if key not in fitted:
                    fitted[key] = BertRegressor.fit(train, bert_config)
                return fitted[key]

            return fit if aim == 1.0 else lambda train: Aimed(fit(train), aim)
        if kind not in ("bert", "llm", "constant", "tfidf") or (arg and kind != "llm"):
            raise click.BadParameter(f"{name}: with --folds every estimator is trained per fold; use bert, constant, "
                                     "tfidf (without a directory) or llm:MODEL", param_hint="--estimators")
        return lambda train: build_estimator(name, backend_for=backend_for, train=train, llm_default=llm_default)

    return {n: factory(n) for n in (n.strip() for n in names.split(",") if n.strip())}


@click.command("eval-predictor")
@click.option("--records", type=RECORDS, multiple=True, required=True, help="Records directory (repeat for several).")
@click.option("--estimators", default="constant,tfidf", show_default=True,
              help=("Comma-separated: bert:DIR, onnx:DIR, llm:MODEL (zero-shot, 'default' is the embedded reasoner), constant, tfidf; "
                    "NAME@FACTOR (not llm) scales its budgets, e.g. tfidf@1.41 aims at the log-centre of [b, 2b]."))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/predictor-eval"), show_default=True,
              help="Directory for report.md, report.json, scatter plots, and the baselines fitted here (constant/, tfidf/).")
@click.option("--held-out", type=click.FloatRange(0, 0.9), default=EXAMPLES.held_out_fraction, show_default=True,
              help="Must match train-predictor's.")
@click.option("--llm-default", type=click.IntRange(min=1), default=None,
              help="Zero-shot fallback budget when a reply has no number (default: the training median).")
@click.option("--folds", type=click.IntRange(min=0), default=0, show_default=True,
              help=("K > 1: K-fold cross-validation by problem id over all records instead of one held-out split; "
                    "estimators are trained per fold (name bert, constant, tfidf without a directory)."))
@click.option("--encoder", default=BERT.encoder, show_default=True, help="With --folds: the encoder of the bert trained per fold.")
@click.option("--epochs", type=click.IntRange(min=1), default=BERT.epochs, show_default=True, help="With --folds: bert epochs, at most.")
@click.option("--max-length", type=click.IntRange(min=8), default=BERT.max_length, show_default=True,
              help="With --folds: bert question tokens kept.")
@click.option("--include-infeasible", is_flag=True,
              help=("Train on infeasible records too, with their vanilla tokens as the budget (as train-predictor's flag); "
                    "only feasible records are scored."))
@click.option("--calibration", type=click.FloatRange(0, 0.9), default=EXAMPLES.calibration_fraction, show_default=True,
              help=("Share of the training ids to calibrate every estimator on (as train-predictor's --calibration; "
                    "constant and tfidf fit on the rest): then coverage.md/json/png report each at every --risks on the held-out split."))
@click.option("--risks", type=RISKS, default=",".join(f"{a:g}" for a in REPORTED_ALPHAS), show_default=True,
              help="With --calibration: the risks alpha reported.")
@click.option("--skip-bad", is_flag=True, help="Skip and count bad records instead of stopping.")
@EXCLUDE
@click.option("--test-records", type=RECORDS, multiple=True,
              help=("Records directory to score on instead of --records' held-out split (repeat for several), e.g. another "
                    "data set: the estimators still train and calibrate on --records' splits; ids in both are dropped from it."))
@click.option("--probe-model", default="default", show_default=True,
              help="The reasoner whose hidden states a bare 'probe' is fitted on ('default', a local model directory or a hub id).")
@backend_options(model_option=False)  # the zero-shot estimator names its model in the llm:MODEL spec
def eval_predictor(records, estimators, out, held_out, llm_default, folds, encoder, epochs, max_length,
                   include_infeasible, calibration, risks, skip_bad, exclude, test_records, probe_model, engine, threads, verbose):
    """Compare budget estimators on the same held-out records: accuracy and cost per question.

    Example: tale eval-predictor --records runs/records --estimators bert:runs/predictor,llm:default,constant,tfidf
    """
    setup(verbose, threads)
    from predictor.data import ExampleConfig, load_examples, split_by_id
    from predictor.metrics import cross_validate, evaluate, markdown_table, write_report

    excluded = excluded_ids(exclude)
    examples = load_examples(list(records), ExampleConfig(include_infeasible=include_infeasible, skip_bad=skip_bad,
                                                          held_out_fraction=held_out, exclude_ids=excluded))
    if exclude:
        click.echo(f"{examples.excluded} records left out: their ids are in {', '.join(map(str, exclude))}", err=True)
    if folds == 1:
        raise click.BadParameter("cross-validation needs at least 2 folds (0: one held-out split)", param_hint="--folds")
    if folds and test_records:
        raise click.UsageError("--folds scores every record of --records in turn; it takes no --test-records")
    if folds:
        from predictor.bert import BertRegressorConfig

        factories = _fold_factories(estimators, engine, llm_default,
                                    BertRegressorConfig(encoder=encoder, epochs=epochs, max_length=max_length))
        evaluation = cross_validate(factories, examples, folds,
                                    on_fold=lambda k, name: click.echo(f"fold {k + 1}/{folds}: {name}", err=True))
        files = write_report(evaluation, out)
        click.echo(markdown_table(evaluation))
        click.echo(f"\n{len(evaluation.ids)} feasible records scored ({len(examples)} loaded), {folds}-fold "
                   f"cross-validation; report in {files.markdown}, {files.json}")
        return
    if folds == 0 and calibration:
        from predictor.data import Split, three_way_split

        train, calibrating, test = three_way_split(examples, held_out, calibration)
        split = Split(train, test)
    else:
        split = split_by_id(examples, held_out)
    if test_records:
        from predictor.data import Split

        known = excluded | {e.id for e in examples}
        test = load_examples(list(test_records), ExampleConfig(skip_bad=skip_bad, exclude_ids=known))
        click.echo(f"scoring on {len(test)} feasible records of {', '.join(map(str, test_records))} "
                   f"({test.excluded} left out: in --records or --exclude)", err=True)
        split = Split(split.train, list(test))
    scored = [e for e in split.held_out if e.feasible]  # an infeasible record has no searched budget
    if not scored:
        raise click.ClickException(f"no held-out records among {sum(e.feasible for e in examples)} feasible ones; "
                                   "add records" if not test_records else "no feasible record in --test-records to score on")
    chosen = _estimators(estimators, split, engine, llm_default, probe_model)
    evaluation = evaluate(chosen, scored, train=split.train)
    files = write_report(evaluation, out)
    if calibration:
        _report_coverage(chosen, calibrating, scored, risks, out)
    for name in ("constant", "tfidf", "probe"):  # fitted here: saved, so evaluate/ablate can name them as name:DIR
        if name in chosen:
            chosen[name].save(out / name)
    click.echo(markdown_table(evaluation))
    click.echo(f"\n{len(scored)} held-out records scored; report in {files.markdown}, {files.json}")
