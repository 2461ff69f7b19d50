"""How much of a static batch's time is padding, and what reordering or segmenting would recover (issue 47, item 3).

Reads the rows of recorded evaluation runs (each answer's output tokens, in the order asked) and counts decode steps
of static batches of ``--batch`` rows: a batch runs as many steps as its longest row. Compared, per run:

- in order: the batches as asked (what `tale evaluate` on ort does);
- by expected length: each chunk of ``--chunk`` questions sorted by what is known before answering (the row's budget,
  or for vanilla and direct rows the estimate in ``--hint-run``'s rows, e.g. the regressor's budgets), then batched;
- by actual length: the same sort by the answer's own length, known only afterwards (the ceiling of any ordering);
- segmented: batches run at most ``--segment`` steps, then finished rows leave and unfinished rows are requeued with
  their tokens so far (the ort experiment of commit 839bbef, since removed), counting the tokens prefilled again.

    python bench/static_batch_waste.py --runs artifacts/eval-gsm8k-500-ort/runs/gsm8k-test__reasoner-sft-lengths__* \\
        --hint-run artifacts/eval-gsm8k-500-ort/runs/gsm8k-test__reasoner-sft-lengths__onnx-predictor-sft-labels-2000-onnx-0.1__a5253790 \\
        --limit 200 --out bench/results/static_batch_waste.json
"""

from __future__ import annotations

import argparse
import json
from collections import deque
from pathlib import Path

from tale.eval.runs import load_rows


def steps(lengths: list[int], batch: int) -> int:
    """Decode steps of static batches in this order: each batch runs to its longest row."""
    return sum(max(lengths[i : i + batch]) for i in range(0, len(lengths), batch))


def sorted_steps(lengths: list[int], keys: list[float], batch: int, chunk: int) -> int:
    total = 0
    for start in range(0, len(lengths), chunk):
        part = sorted(range(start, min(start + chunk, len(lengths))), key=lambda i: keys[i])
        total += steps([lengths[i] for i in part], batch)
    return total


def segmented(lengths: list[int], prompt_tokens: list[int], batch: int, segment: int) -> tuple[int, int]:
    """(decode steps, tokens prefilled again) when batches run ``segment`` steps and unfinished rows are requeued
    at the front of the queue, as the removed ort experiment did."""
    queue, decode, again = deque((n, p, 0) for n, p in zip(lengths, prompt_tokens)), 0, 0
    while queue:
        rows_ = [queue.popleft() for _ in range(min(batch, len(queue)))]
        run = max(min(n - done, segment) for n, _, done in rows_)
        decode += run
        requeue = [(n, p, done + run) for n, p, done in rows_ if n - done > run]
        again += sum(p + done for _, p, done in requeue)
        queue.extendleft(reversed(requeue))
    return decode, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="Evaluation run directories (rows.jsonl).")
    parser.add_argument("--hint-run", type=Path, default=None, help="A budget run whose budgets estimate vanilla and direct rows' lengths.")
    parser.add_argument("--limit", type=int, default=None, help="The first N rows of each run.")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=64, help="Questions per call that a sort may reorder.")
    parser.add_argument("--segments", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    hint = {r.id: r.budget for r in load_rows(args.hint_run)} if args.hint_run else {}
    report = {"batch": args.batch, "chunk": args.chunk, "limit": args.limit,
              "hint_run": None if args.hint_run is None else str(args.hint_run), "runs": []}
    for run in args.runs:
        got = load_rows(run)[: args.limit]
        lengths = [r.output_tokens for r in got]
        in_order = steps(lengths, args.batch)
        keys = [r.budget if r.budget is not None else hint.get(r.id, 0) for r in got]
        entry = {"run": run.name, "n": len(got), "output_tokens": sum(lengths), "steps_in_order": in_order,
                 "busy_share_in_order": round(sum(lengths) / (in_order * args.batch), 3),
                 "by_expected_length": round(sorted_steps(lengths, keys, args.batch, args.chunk) / in_order, 3),
                 "by_actual_length": round(sorted_steps(lengths, lengths, args.batch, args.chunk) / in_order, 3),
                 "segmented": {}}
        for segment in args.segments:
            decode, again = segmented(lengths, [r.prompt_tokens for r in got], args.batch, segment)
            entry["segmented"][str(segment)] = {"steps": round(decode / in_order, 3), "prefilled_again_per_row": round(again / len(got), 1)}
        report["runs"].append(entry)
        print(f"{run.name}: n {len(got)}, busy {entry['busy_share_in_order']:.0%} of batch slots in order; steps x "
              f"{entry['by_expected_length']} by expected length, x {entry['by_actual_length']} by actual length; segmented "
              + ", ".join(f"{s}: x {v['steps']} (+{v['prefilled_again_per_row']:.0f} prefill/row)" for s, v in entry["segmented"].items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
