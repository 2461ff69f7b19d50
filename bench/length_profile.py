"""How long a run's answers are: counts at the length limit and among the short ones, with how many are right.

    python bench/length_profile.py --run RUN_DIR [--run RUN_DIR ...] [--long 380] [--short 120] \
        [--training sft|dpo:RECORDS_DIR:N ...] [--out FILE.json]

- Per run: questions, accuracy, mean output tokens, answers of at least ``--long`` tokens (run to the
  limit: 380 of 384 leaves room for a closing line the tokenizer splits differently) and of at most
  ``--short`` tokens, each with how many are right.
- Per ``--training METHOD:RECORDS_DIR:N``: the N examples ``tale train-reasoner METHOD --internalized
  --max-examples N`` draws (seed 42, as the trainer does) and the mean tokens of their chosen answers
  and of the same questions' vanilla answers (how much shorter the model was taught to be).
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import click

from tale.eval.runs import load_rows


def profile(run_dir: Path, long: int, short: int) -> dict:
    rows = load_rows(run_dir)
    if not rows:
        raise click.ClickException(f"{run_dir}: no evaluation rows (rows.jsonl)")
    result = {"run": str(run_dir), "n": len(rows), "accuracy": round(mean(r.correct for r in rows), 4),
              "mean_tokens": round(mean(r.output_tokens for r in rows), 1)}
    for name, keep in ((f"at_least_{long}", lambda t: t >= long), (f"at_most_{short}", lambda t: t <= short)):
        hit = [r for r in rows if keep(r.output_tokens)]
        result[name] = len(hit)
        result[f"{name}_right"] = sum(r.correct for r in hit)
    return result


def training_profile(spec: str) -> dict:
    from data_builder.records import load_records
    from reasoner.post_train import build_training_set, chosen_tokens
    from reasoner.post_train.train import draw_examples

    method, _, rest = spec.partition(":")
    records_dir, _, n = rest.rpartition(":")
    if method not in ("sft", "dpo") or not records_dir or not n.isdigit():
        raise click.BadParameter(f"{spec!r}: expected sft|dpo:RECORDS_DIR:N", param_hint="--training")
    if not Path(records_dir).is_dir():
        raise click.BadParameter(f"{records_dir}: no such records directory", param_hint="--training")
    rows = {r.id: r for r in load_records(Path(records_dir))}
    drawn = draw_examples(build_training_set(method, rows.values(), "internalized"), int(n), 42)
    picked = [rows[i.split("#")[0]] for i in drawn.dataset["id"]]
    if not picked:
        raise click.ClickException(f"{records_dir}: no {method} training examples")
    return {"method": method, "records": records_dir, "examples": len(picked),
            "chosen_tokens": round(mean(chosen_tokens(r) for r in picked), 1),
            "vanilla_tokens": round(mean(r.vanilla_tokens for r in picked), 1)}


@click.command()
@click.option("--run", "runs", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True)
@click.option("--long", type=int, default=380, show_default=True, help="Answers of at least this many tokens count as at the limit.")
@click.option("--short", type=int, default=120, show_default=True, help="Answers of at most this many tokens count as short.")
@click.option("--training", "training", multiple=True, help="METHOD:RECORDS_DIR:N, the examples train-reasoner draws.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also save the numbers here (JSON).")
def main(runs: tuple[Path, ...], long: int, short: int, training: tuple[str, ...], out: Path | None) -> None:
    if not runs and not training:
        raise click.UsageError("give at least one --run or --training")
    result = {"long": long, "short": short, "runs": [profile(r, long, short) for r in runs],
              "training": [training_profile(spec) for spec in training]}
    for item in result["runs"] + result["training"]:
        print(json.dumps(item))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
