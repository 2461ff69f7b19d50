"""Write the first N questions a records directory found feasible, as a GSM8K-format file for a repeat search.

    python bench/noise_questions.py --records artifacts/records/gsm8k-train-sft-lengths-elastic-2000 \
        --dataset path/to/gsm8k/train.jsonl --n 40 --out runs/noise/questions.jsonl

The label-noise measurement (bench/label_noise.py) repeats the budget search of questions that already
have a label; searching the others again mostly finds them infeasible again. The rows are copied from
``--dataset`` as they are (question and worked answer), in the records' order, so ``tale build
--dataset gsm8k:OUT`` gives them the same problem ids. The output belongs in runs/, not in the repo.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from data_builder.records import load_records
from data_builder.sources import problem_id


@click.command()
@click.option("--records", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The GSM8K jsonl file the records were built from.")
@click.option("--n", type=click.IntRange(min=1), required=True, help="How many feasible questions, from the first.")
@click.option("--out", type=click.Path(path_type=Path), required=True)
def main(records: Path, dataset: Path, n: int, out: Path) -> None:
    feasible = [r.id for r in load_records(records) if r.feasible][:n]
    rows = {}
    for line in dataset.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[problem_id("gsm8k", row["question"])] = row
    if missing := [i for i in feasible if i not in rows]:
        raise click.ClickException(f"{len(missing)} of the records' ids are not in {dataset} (first: {missing[0]})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(rows[i]) + "\n" for i in feasible))
    click.echo(f"{len(feasible)} feasible questions written to {out}")


if __name__ == "__main__":
    main()
