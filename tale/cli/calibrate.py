"""``tale calibrate``: split-conformal calibration of a saved estimator or an ONNX export."""

from __future__ import annotations

from pathlib import Path

import click

from predictor.data import ExampleConfig
from tale.cli.common import EXCLUDE, excluded_ids, setup


@click.command("calibrate")
@click.option("--predictor", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A saved estimator directory (bert, tfidf, constant) or an export (tale export: ONNX or TF-IDF linear).")
@click.option("--records", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True, required=True,
              help="Records directory (repeat for several).")
@click.option("--held-out", type=click.FloatRange(0, 0.9), default=ExampleConfig.held_out_fraction, show_default=True,
              help="Share of problem ids kept out for eval-predictor's test split, as train-predictor's --held-out; never calibrated on.")
@click.option("--fraction", type=click.FloatRange(0, 0.9, min_open=True), default=0.2, show_default=True,
              help="Share of the remaining ids calibrated on, as train-predictor's --calibration (the ids it did not train on).")
@click.option("--all", "use_all", is_flag=True, help="Calibrate on every feasible record given: records the estimator never saw.")
@click.option("--risk", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1, show_default=True,
              help="The smallest risk the calibration must serve: refused with fewer records than it needs.")
@click.option("--skip-bad", is_flag=True, help="Skip and count bad records instead of stopping.")
@EXCLUDE
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def calibrate(directory: Path, records: tuple[Path, ...], held_out: float, fraction: float, use_all: bool,
              risk: float, skip_bad: bool, exclude: tuple[Path, ...], verbose: bool) -> None:
    """Calibrate an estimator's budgets so that a chosen risk holds: afterwards DIR%ALPHA (e.g.
    onnx:DIR%0.1) gives budgets that suffice for at least 1 - ALPHA of new questions.

    Example: tale calibrate --predictor runs/predictor --records runs/records
    """
    setup(verbose, None)
    from predictor.calibrate import CALIBRATION_FILE, REPORTED_ALPHAS, fit, rank
    from predictor.data import fingerprint, load_examples, three_way_split

    examples = load_examples(list(records), ExampleConfig(skip_bad=skip_bad, exclude_ids=excluded_ids(exclude)))
    chosen = [e for e in examples if e.feasible] if use_all else three_way_split(examples, held_out, fraction)[1]
    onnx = (directory / "tale_onnx.json").is_file()
    if onnx:
        from export.runtime import OnnxEstimator

        estimator = OnnxEstimator.load(directory)
        kind = "onnx"
    else:
        from predictor import load_estimator

        estimator = load_estimator(directory)
        kind = {"BertRegressor": "bert", "TfidfRidgeEstimator": "tfidf", "LinearEstimator": "tfidf"}.get(
            type(estimator).__name__, "constant")
    calibration = fit(estimator, [e.question for e in chosen], [e.budget for e in chosen], name=f"{kind}:{directory}",
                      calibration_fingerprint=fingerprint(chosen))
    calibration.quantile(risk)  # refuses, saying how many records the risk needs, before anything is written
    saved = directory / CALIBRATION_FILE
    if onnx:
        from export.manifest import attach_calibration

        attach_calibration(directory, calibration)
    elif type(estimator).__name__ == "LinearEstimator":  # the TF-IDF export carries its calibration in its one file
        from predictor.linear import attach_calibration as attach_linear

        saved = attach_linear(directory, calibration)
    else:
        calibration.save(directory)
    factors = ", ".join(f"alpha {a:g}: x{calibration.factor(a):.2f}" for a in REPORTED_ALPHAS if rank(calibration.n, a) <= calibration.n)
    click.echo(f"calibrated {kind}:{directory} on {calibration.n} feasible records ({factors}); "
               f"saved {saved}; use {kind}:{directory}%ALPHA")
