"""Paired comparison of two evaluation runs on the same questions, and what the SFT records hold.

    python bench/paired_runs.py --run A_RUN_DIR --against B_RUN_DIR [--records DIR] [--exclude RUN_DIR] [--out FILE.json]
    python bench/paired_runs.py --run A1 --against B1 --run A2 --against B2 ...   # pairs pooled (one per data set)

- Questions A answers correctly and B does not (gained), the reverse (lost), and a two-sided exact
  sign test on those discordant pairs; how many of A's answers are shorter and longer than B's, and how
  many are B's word for word (with other budgets in the prompt: how often the budget changed nothing);
  the ratio of A's mean output tokens to B's and, where both runs had budgets, of their mean budgets (for
  one model under budgets scaled by a factor, a model that reads the number writes about that much more).
- Both runs' accuracy and mean output tokens, and the share of A's budgeted answers within their budget.
- With several ``--run``/``--against`` pairs (the n-th run against the n-th against, e.g. one pair per
  data set): every number over the questions of all pairs together, so one sign test covers them all.
- With ``--exclude``: only the questions that run directory does not hold (after growing two runs with a
  larger ``--limit``, the new questions alone, apart from the ones a choice was made on).
- On the questions where A was given a budget: A's accuracy and mean output tokens, B's on the same
  questions, the mean budget and the three commonest budgets, and the estimator's mean prompt and output tokens.
- With ``--records``: over the feasible records, the mean searched budget, the mean output tokens of
  the answer under it (``reasoner.post_train.chosen_tokens``) and the share within the budget; and the
  run's accuracy on the questions whose beta* the search tried with the budget prompt, and on those where
  the first halving failed (beta* is then the vanilla answer's length, never asked with a budget), with
  how many of the tried ones the run answers word for word as the search did.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from statistics import mean

import click

from data_builder.record import BudgetRecord
from tale.eval.paired import sign_test
from tale.eval.runs import EvalRow, load_rows


def rows(run_dir: Path) -> dict[str, EvalRow]:
    if not (loaded := load_rows(run_dir)):
        raise click.ClickException(f"{run_dir}: no evaluation rows (rows.jsonl)")
    return {r.id: r for r in loaded}


def tried(record: BudgetRecord) -> bool:
    """Whether the search asked with the budget prompt at the record's budget and got it right. When the
    first halving already fails, beta* is the vanilla answer's length and its answer the vanilla one."""
    return any(step.budget == record.budget and step.correct for step in record.trace)


def significant(p: float) -> float:
    """A p-value to 3 significant figures: rounding to 3 decimals would print p = 3e-5 as 0.0."""
    return float(f"{p:.3g}")


def named(dirs: tuple[Path, ...]) -> str | list[str]:
    """One directory as its path, several as a list (the JSON of a single pair stays as it was)."""
    return str(dirs[0]) if len(dirs) == 1 else [str(d) for d in dirs]


def oracle_breakdown(a: dict[str, EvalRow], feasible: dict[str, BudgetRecord]) -> dict:
    """The run's questions that had a feasible record, split by whether beta* was tried in the search; on
    the tried ones, how many of the run's answers repeat the search's answer word for word."""
    result: dict = {}
    for name, want in (("tried", True), ("untried", False)):
        ids = [k for k, r in feasible.items() if k in a and tried(r) == want]
        result[f"records_{name}"] = len(ids)
        if ids:
            result[f"records_{name}_run_accuracy"] = round(mean(a[k].correct for k in ids), 3)
        if want:
            result["records_tried_same_text"] = sum(a[k].text == feasible[k].reasoning for k in ids)
    return result


@click.command()
@click.option("--run", "run_dirs", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True, multiple=True,
              help="Repeat, each with its --against, to pool several pairs.")
@click.option("--against", "against_dirs", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              multiple=True)
@click.option("--records", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--exclude", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Leave out the questions this run directory holds.")
@click.option("--shared", is_flag=True, help="Pair the questions both runs hold (e.g. the first 200 of a 300-question run).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also save the numbers here (JSON).")
def main(run_dirs: tuple[Path, ...], against_dirs: tuple[Path, ...], records: Path | None, exclude: Path | None,
         shared: bool, out: Path | None) -> None:
    if len(run_dirs) != len(against_dirs):
        raise click.UsageError(f"give one --against for each --run ({len(run_dirs)} against {len(against_dirs)})")
    a: dict[str, EvalRow] = {}
    b: dict[str, EvalRow] = {}
    for run_dir, against in zip(run_dirs, against_dirs):
        ra, rb = rows(run_dir), rows(against)
        if shared:
            ra, rb = {k: r for k, r in ra.items() if k in rb}, {k: r for k, r in rb.items() if k in ra}
            if not ra:
                raise click.ClickException(f"{run_dir} and {against} share no question")
        if set(ra) != set(rb):
            raise click.ClickException(f"{run_dir} and {against} hold different questions")
        if set(ra) & set(a):
            raise click.ClickException(f"{run_dir} holds questions of an earlier --run")
        a, b = a | ra, b | rb
    left_out = set(rows(exclude)) if exclude else set()
    if left_out:
        a, b = ({k: r for k, r in run.items() if k not in left_out} for run in (a, b))
        if not a:
            raise click.ClickException(f"{exclude} holds every question of {', '.join(map(str, run_dirs))}")
    gained = sum(a[k].correct and not b[k].correct for k in a)
    lost = sum(b[k].correct and not a[k].correct for k in a)
    budgeted = [k for k in a if a[k].budget]
    result = {"run": named(run_dirs), "against": named(against_dirs), "n": len(a),
              **({"excluded": str(exclude), "excluded_n": len(left_out)} if exclude else {}),
              "run_accuracy": round(mean(r.correct for r in a.values()), 4),
              "against_accuracy": round(mean(r.correct for r in b.values()), 4),
              "run_tokens": round(mean(r.output_tokens for r in a.values()), 1),
              "against_tokens": round(mean(r.output_tokens for r in b.values()), 1),
              "gained": gained, "lost": lost,
              "sign_test_p": significant(sign_test(gained, lost)),
              "shorter": sum(a[k].output_tokens < b[k].output_tokens for k in a),
              "longer": sum(a[k].output_tokens > b[k].output_tokens for k in a),
              "same_text": sum(a[k].text == b[k].text for k in a),
              "tokens_ratio": round(mean(r.output_tokens for r in a.values()) / mean(r.output_tokens for r in b.values()), 3),
              "budgeted": len(budgeted)}
    both = [k for k in budgeted if b[k].budget]
    if both:
        result["budget_ratio"] = round(mean(a[k].budget for k in both) / mean(b[k].budget for k in both), 3)
    if budgeted:
        result |= {"budgeted_within_budget": round(mean(a[k].output_tokens <= a[k].budget for k in budgeted), 3),
                   "budgeted_run_accuracy": mean(a[k].correct for k in budgeted),
                   "budgeted_run_tokens": round(mean(a[k].output_tokens for k in budgeted), 1),
                   "budgeted_against_accuracy": mean(b[k].correct for k in budgeted),
                   "budgeted_against_tokens": round(mean(b[k].output_tokens for k in budgeted), 1),
                   "budgeted_mean_budget": round(mean(a[k].budget for k in budgeted), 1),
                   "budgeted_common_budgets": Counter(a[k].budget for k in budgeted).most_common(3),
                   "estimator_prompt_tokens": round(mean(a[k].estimator_prompt_tokens for k in budgeted), 1),
                   "estimator_output_tokens": round(mean(a[k].estimator_output_tokens for k in budgeted), 1)}
    if records:
        from data_builder.records import load_records
        from reasoner.post_train import chosen_tokens

        feasible = {r.id: r for r in load_records(records) if r.feasible}
        pairs = [(r.budget, t) for r in feasible.values() if (t := chosen_tokens(r)) is not None]
        result |= {"records": str(records), "records_feasible": len(pairs),
                   "records_mean_budget": round(mean(b for b, _ in pairs), 1),
                   "records_mean_answer_tokens": round(mean(t for _, t in pairs), 1),
                   "records_within_budget": round(mean(t <= b for b, t in pairs), 3)}
        result |= oracle_breakdown(a, feasible)
    for key, value in result.items():
        print(f"{key}: {value}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
