"""How well one budget search predicts another of the same questions: the label-noise ceiling.

    python bench/label_noise.py --records runs/noise/samples/seed-0 --records runs/noise/samples/seed-1 \
        --records runs/noise/samples/seed-2 [--records GREEDY_DIR] [--out bench/results/label_noise.json]

Each --records directory is one search of the same questions (sampled searches with other seeds, the
greedy search beside them). For every ordered pair of searches (A, B), over the questions feasible in
both, it reports the Spearman correlation of their budgets and the in-range rate of A's budget taken as
an estimate of B's (``B <= A <= 2 B``, ``predictor.metrics.in_range``) with its 95% Wilson interval, beside
the in-range rate of the best constant in hindsight on the same labels (``label_ceiling.best_constant``, the
question-blind reference on the same questions). It also reports how often both agree on feasibility.

With three or more sampled searches it scores the multi-sample label the same way, leave one out: the
low median of the other searches (``data_builder.labels.median_label``) against the left-out search,
beside one search against it. If the median predicts a fresh search better, it is the less noisy label.

No model is run; the numbers come from the records alone.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import click
from label_ceiling import best_constant
from scipy.stats import binomtest

from data_builder.labels import median_label
from data_builder.records import load_records
from predictor.metrics import _spearman, in_range


def agreement(estimates: dict[str, int], labels: dict[str, int]) -> dict:
    """In-range rate and Spearman of ``estimates`` against ``labels`` on the ids both hold."""
    ids = sorted(estimates.keys() & labels.keys())
    if not ids:
        return {"n": 0}
    a, b = [estimates[i] for i in ids], [labels[i] for i in ids]
    spearman = _spearman(a, b)
    hits = sum(in_range(x, y) for x, y in zip(a, b))
    interval = binomtest(hits, len(ids)).proportion_ci(method="wilson")
    constant, constant_rate = best_constant(b)
    return {"n": len(ids), "in_range": round(hits / len(ids), 3),
            "in_range_95ci": [round(interval.low, 3), round(interval.high, 3)],
            "under": round(sum(x < y for x, y in zip(a, b)) / len(ids), 3),
            "spearman": None if spearman is None else round(spearman, 3),
            "best_constant": constant, "best_constant_in_range": round(constant_rate, 3)}


def mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.fmean(values), 3) if values else None


@click.command()
@click.option("--records", "directories", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
              required=True, help="One search of the questions per directory (repeat; at least 2).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the JSON here too.")
def main(directories: tuple[Path, ...], out: Path | None) -> None:
    if len(directories) < 2:
        raise click.UsageError("give at least 2 --records directories")
    searches = [{r.id: r for r in load_records(d)} for d in directories]
    common = set.intersection(*(set(s) for s in searches))
    searches = [{i: s[i] for i in common} for s in searches]
    budgets = [{i: r.budget for i, r in s.items() if r.feasible and r.budget is not None} for s in searches]
    names = [str(d) for d in directories]
    pairs = []
    for x, y in itertools.permutations(range(len(searches)), 2):
        both = sum(searches[x][i].feasible == searches[y][i].feasible for i in common)
        pairs.append({"estimate": names[x], "label": names[y], "feasibility_agreement": round(both / len(common), 3),
                      **agreement(budgets[x], budgets[y])})
    result = {"questions": len(common), "searches": names,
              "feasible_share": [round(len(b) / len(common), 3) for b in budgets],
              "mean_budget": [round(statistics.fmean(b.values()), 1) if b else None for b in budgets],
              "pairs": pairs, "one_search_against_another": {k: mean_of(pairs, k) for k in ("in_range", "under", "spearman", "best_constant_in_range")}}
    sampled = [k for k, d in enumerate(directories) if "seed-" in d.name]
    if len(sampled) >= 3:
        single, median = [], []
        for left_out in sampled:
            others = [k for k in sampled if k != left_out]
            labels = {i: median_label([searches[k][i] for k in others]) for i in common}
            med = {i: r.budget for i, r in labels.items() if r.feasible and r.budget is not None}
            median.append(agreement(med, budgets[left_out]))
            single.extend(agreement(budgets[k], budgets[left_out]) for k in others)
        result["leave_one_out"] = {
            "sampled_searches": [names[k] for k in sampled],
            "one_search": {k: mean_of(single, k) for k in ("n", "in_range", "under", "spearman")},
            f"median_of_{len(sampled) - 1}": {k: mean_of(median, k) for k in ("n", "in_range", "under", "spearman")}}
    text = json.dumps(result, indent=2)
    click.echo(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
