"""What the searched budgets of a records directory let any question-only estimator reach.

    python bench/label_ceiling.py --records artifacts/records/gsm8k-train-qwen2.5-coder-0.5b-elastic-600 \
        [--out bench/results/label_ceiling.json]

The in-range rate (``beta* <= predicted <= 2 beta*``, ``predictor.metrics``) depends on how the search
made each label. For every feasible record it reports:

- how the searched budget relates to the vanilla answer's output tokens T: the halving and elastic
  searches return T itself or T // 2, T // 4, ... (how many halvings the search kept);
- the in-range rate of an oracle that knows T (predicts T for every question): what a perfect model of
  the reasoner's unconstrained answer length would reach, with the number of halvings left unknown
  (and the same one token above and one below T, since T is also in range of an even T's half);
- the best constant chosen in hindsight on these very labels: an upper bound for every constant
  estimator, and for any estimator whose predictions carry no information about the label;
- the halving count as a class to guess. The in-range intervals of T, T // 2 and T // 4 are disjoint
  but for their ends ([T, 2T], [T // 2, 2 (T // 2)] and so on meet only where an estimate equals T or
  T // 2 exactly), so an estimate in range names the halving count: a question-only estimator reaches
  at most the accuracy with which the question predicts that count, plus its estimates that hit such
  an end to the token. With nothing known, that is the share of the most common count. How well the
  question predicts it: 5-fold cross-validated TF-IDF + logistic regression on "halved at least once"
  (accuracy and ROC AUC), and the same from the word count alone and from T (which no estimator sees).
  Left out where a label is not a halving of T (a bisect search), and the cross-validation where either
  class has fewer than 5 records;
- the Spearman correlation of the label, and of T over every record, with the question's word count:
  how much of either the wording shows.

No model is run; the numbers come from the records alone.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import click
import numpy as np

from data_builder.records import load_records
from predictor.metrics import _spearman, in_range


def best_constant(budgets: list[int]) -> tuple[int, float]:
    """The constant with the highest in-range rate on ``budgets`` (the smallest if tied), and that rate.

    A constant c is in range of b when b <= c <= 2b, so the share changes only at a label or twice one.
    """
    candidates = sorted({b for b in budgets} | {2 * b for b in budgets})
    rates = [(sum(in_range(c, b) for b in budgets) / len(budgets), -c) for c in candidates]
    rate, negative = max(rates)
    return -negative, rate


def halvings(budget: int, vanilla_tokens: int) -> int | None:
    """k where budget == vanilla_tokens // 2**k (0: the vanilla length itself); None if none."""
    for k in range(32):
        if vanilla_tokens // 2**k == budget:
            return k
        if vanilla_tokens // 2**k < budget:
            return None
    return None


def spearman(a: list[float], b: list[float]) -> float | None:
    value = _spearman(a, b)  # the metric eval-predictor reports
    return None if value is None else round(value, 3)


def outcome_predictability(questions: list[str], features: dict[str, list[float]], halved: list[bool], seed: int = 0) -> dict:
    """5-fold cross-validated accuracy and ROC AUC of predicting ``halved`` from the question's TF-IDF
    and from each single feature (log-scaled)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    y = np.asarray(halved, dtype=int)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    inputs = {"question_tfidf": (make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                               LogisticRegression(max_iter=1000)), questions)}
    for name, values in features.items():
        inputs[name] = (LogisticRegression(), np.log(np.asarray(values, dtype=float))[:, None])
    result = {}
    for name, (model, x) in inputs.items():
        p = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
        result[name] = {"accuracy": round(float(np.mean((p > 0.5) == y)), 4), "roc_auc": round(float(roc_auc_score(y, p)), 3)}
    return result


@click.command()
@click.option("--records", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/label_ceiling.json"), show_default=True)
def main(records: Path, out: Path) -> None:
    rows = load_records(records)
    if not rows:
        raise click.ClickException(f"{records}: no records")
    feasible = [r for r in rows if r.feasible]
    if not feasible:
        raise click.ClickException(f"{records}: no feasible records")
    budgets = [r.budget for r in feasible]
    vanilla = [r.vanilla_tokens for r in feasible]
    depth = Counter(halvings(b, t) for b, t in zip(budgets, vanilla))
    constant, constant_rate = best_constant(budgets)
    words = lambda r: len(r.question.split())  # noqa: E731
    share_in_range = lambda predicted: round(sum(map(in_range, predicted, budgets)) / len(budgets), 4)  # noqa: E731
    result = {
        "records": str(records),
        "questions": len(rows),
        "feasible": len(feasible),
        "budget_median": statistics.median(budgets),
        "budget_min": min(budgets),
        "budget_max": max(budgets),
        "halvings": {("not a halving of T" if k is None else str(k)): n for k, n in sorted(depth.items(), key=str)},
        "oracle_vanilla_tokens_in_range": share_in_range(vanilla),
        "oracle_vanilla_tokens_plus_1_in_range": share_in_range([t + 1 for t in vanilla]),
        "oracle_vanilla_tokens_minus_1_in_range": share_in_range([t - 1 for t in vanilla]),
        "best_constant_in_hindsight": constant,
        "best_constant_in_range": round(constant_rate, 4),
        "median_constant_in_range": share_in_range([statistics.median(budgets)] * len(budgets)),
        "spearman_budget_vs_words": spearman([words(r) for r in feasible], budgets),
        "spearman_vanilla_tokens_vs_words_all": spearman([words(r) for r in rows], [r.vanilla_tokens for r in rows]),
        "spearman_budget_vs_vanilla_tokens": spearman(vanilla, budgets),
    }
    halved = [b < t for b, t in zip(budgets, vanilla)]
    if None in depth:  # a bisect search: labels between the halvings, so the count names no window
        click.echo(f"{depth[None]} labels are not a halving of T: the halving-count bound does not apply")
    else:
        result["most_common_halvings_share"] = round(max(depth.values()) / len(feasible), 4)
        result["halved_at_least_once"] = round(sum(halved) / len(feasible), 4)
        if min(sum(halved), len(halved) - sum(halved)) >= 5:  # 5 folds need 5 of each
            result["halved_predicted_5fold_cv"] = outcome_predictability(
                [r.question for r in feasible], {"words": [words(r) for r in feasible], "vanilla_tokens": vanilla}, halved)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        click.echo(f"{key}: {value}")
    click.echo(f"saved {out}")


if __name__ == "__main__":
    main()
