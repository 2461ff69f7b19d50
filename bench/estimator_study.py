"""What a learned budget saves over a constant at equal coverage, with significance, from an eval-predictor run.

    python bench/estimator_study.py --eval artifacts/estimator-study/sft-labels --alpha 0.1 \
        [--baseline constant] [--out bench/results/estimator_study.json]

``tale eval-predictor --calibration F`` calibrates every estimator on the same questions and writes, in
``coverage.json``, each test question's calibrated budget at each risk alpha. At one alpha every
estimator covers about 1 - alpha of the test questions, so the one that spends fewer budget tokens is the
better one. For each estimator against ``--baseline`` (the constant), on the same test questions:

- coverage and mean budget of both, and the saving ``1 - mean(estimator) / mean(baseline)``;
- a 95% bootstrap interval of that saving (resampling test questions, 10,000 draws, seed 0): the
  calibration split is held fixed, so the interval leaves out the split-to-split variation of the
  conformal factor (about sqrt(a(1-a)/n_cal) in coverage);
- the paired two-sided Wilcoxon signed-rank p-value of the per-question budget differences, and how
  many questions get a smaller or larger budget than from the baseline;
- the coverage difference, with an exact McNemar (sign) test on the questions one covers and the
  other does not: a saving bought with lower coverage is not a saving.

No model is run; the numbers come from the eval-predictor run alone.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import click
import numpy as np


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` against ``losses`` (ties left out)."""
    from scipy.stats import binomtest

    n = wins + losses
    return 1.0 if n == 0 else float(binomtest(wins, n, 0.5).pvalue)


def compare(budgets: list[int], baseline: list[int], targets: list[int], draws: int = 10_000, seed: int = 0) -> dict:
    """``budgets`` against ``baseline`` (calibrated budgets of the same test questions, whose searched budgets are ``targets``)."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(budgets, dtype=float), np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(draws, len(a)))
    savings = 1 - a[index].mean(1) / b[index].mean(1)
    differences = a - b
    p = float(wilcoxon(differences).pvalue) if np.any(differences) else 1.0
    covered = [t <= x for t, x in zip(targets, budgets)]
    covered_base = [t <= x for t, x in zip(targets, baseline)]
    return {
        "n": len(a),
        "mean_budget": round(float(a.mean()), 1), "baseline_mean_budget": round(float(b.mean()), 1),
        "saving": round(float(1 - a.mean() / b.mean()), 4),
        "saving_95ci": [round(float(q), 4) for q in np.quantile(savings, [0.025, 0.975])],
        "smaller": int((differences < 0).sum()), "larger": int((differences > 0).sum()), "wilcoxon_p": p,
        "coverage": round(statistics.fmean(covered), 4), "baseline_coverage": round(statistics.fmean(covered_base), 4),
        "covered_only_here": sum(x and not y for x, y in zip(covered, covered_base)),
        "covered_only_by_baseline": sum(y and not x for x, y in zip(covered, covered_base)),
        "coverage_sign_p": sign_test(sum(x and not y for x, y in zip(covered, covered_base)),
                                     sum(y and not x for x, y in zip(covered, covered_base))),
    }


@click.command()
@click.option("--eval", "run", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A tale eval-predictor --calibration output directory.")
@click.option("--alpha", type=float, default=0.1, show_default=True, help="The risk compared at (1 - alpha coverage).")
@click.option("--baseline", default="constant", show_default=True, help="The estimator name to compare against.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the JSON here too.")
def main(run: Path, alpha: float, baseline: str, out: Path | None) -> None:
    report = json.loads((run / "report.json").read_text())
    rows = [r for r in json.loads((run / "coverage.json").read_text()) if abs(r["alpha"] - alpha) < 1e-9]
    by_name = {r["estimator"]: r for r in rows}
    if baseline not in by_name or not by_name[baseline]["budgets"]:
        raise click.UsageError(f"{run}/coverage.json has no per-question budgets of {baseline!r} at alpha {alpha:g}")
    targets = report["targets"]
    base = by_name[baseline]["budgets"]
    result = {"eval": str(run), "alpha": alpha, "baseline": baseline, "n_test": len(targets),
              "n_calibration": by_name[baseline]["n_calibration"],
              "point": {r["name"]: {k: r["scores"][k] for k in ("mae", "spearman", "in_range_rate", "under_budget_rate")}
                        for r in report["results"]},
              "against_baseline": {name: compare(r["budgets"], base, targets) for name, r in by_name.items()
                                   if name != baseline and r["budgets"]}}
    text = json.dumps(result, indent=2)
    click.echo(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
