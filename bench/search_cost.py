"""What the budget search costs, measured on the same questions in one run.

    python bench/search_cost.py [--questions 8] [--model default] [--backend ort] [--precision int4-b128] [--threads 2]
        [--out bench/results/search_cost.json]

1. Wall time of the halving search batched (one call per round over all questions) against one
   question at a time, one prompt per call: the ratio is what batching buys.
2. Calls, tokens and searched budgets per question for halving, elastic and bisect. Greedy decoding
   gives the same answer to the same prompt, so these three reuse answers already generated for an
   identical prompt (a memo keyed by prompt, filled by the timed batched run); calls and tokens are
   counted from each mode's own trace, as if nothing were shared.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import click

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "train.jsonl"


class OneAtATime:
    """The same backend asked one prompt per call."""

    def __init__(self, backend) -> None:
        self.backend, self.name = backend, backend.name

    def generate(self, prompts, max_new_tokens):
        return [self.backend.generate([p], max_new_tokens)[0] for p in prompts]


class Memo:
    """Answers an identical prompt from memory (valid for greedy decoding only)."""

    def __init__(self, backend) -> None:
        self.backend, self.name, self.seen = backend, backend.name, {}

    def generate(self, prompts, max_new_tokens):
        missing = [p for p in dict.fromkeys(prompts) if (p, max_new_tokens) not in self.seen]
        for p, g in zip(missing, self.backend.generate(missing, max_new_tokens) if missing else []):
            self.seen[(p, max_new_tokens)] = g
        return [self.seen[(p, max_new_tokens)] for p in prompts]


def by_id(results: Sequence) -> dict:
    """Searched budgets by problem id: results arrive in completion order, which batching changes."""
    return {r.problem.id: r.budget for r in results}


def per_question(results: Sequence) -> dict:
    feasible = [r for r in results if r.feasible]
    return {
        "questions": len(results),
        "feasible": len(feasible),
        "calls_per_question": statistics.fmean(r.calls for r in results),
        "tokens_per_question": statistics.fmean(r.tokens_spent for r in results),
        "mean_budget": statistics.fmean(r.budget for r in feasible) if feasible else None,
        "mean_vanilla_tokens_feasible": statistics.fmean(r.vanilla_tokens for r in feasible) if feasible else None,
        "budgets": by_id(results),
    }


@click.command()
@click.option("--questions", type=int, default=8, show_default=True)
@click.option("--model", default="default", show_default=True)
@click.option("--max-new-tokens", type=int, default=384, show_default=True)
@click.option("--backend", "kind", type=click.Choice(["ort", "hf"]), default="ort", show_default=True)
@click.option("--precision", default="int4-b128", show_default=True, help="ort: a --precision preset; hf: a torch dtype (float32).")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/search_cost.json"))
def main(questions: int, model: str, max_new_tokens: int, kind: str, precision: str, threads: int, out: Path) -> None:
    import os

    import torch

    from data_builder.search import SearchConfig, search_budgets
    from data_builder.sources import load_problems
    from reasoner.backends import make_backend

    if not DATA.is_file():
        raise click.ClickException(f"benchmark data not found: {DATA} (the shared data sets must sit beside the repo)")
    problems = load_problems(f"gsm8k:{DATA}", limit=questions, seed=0)
    torch.set_num_threads(threads)
    options = ({"precision": precision, "threads": threads} if kind == "ort" else {"dtype": precision, "device": "cpu"})
    backend = make_backend(kind, model, batch_size=questions, **options)
    result: dict = {"model": model, "backend": kind, "precision": precision, "threads": threads, "questions": questions,
                    "max_new_tokens": max_new_tokens, "dataset": str(DATA.name), "load_average_before": os.getloadavg()}

    def timed(label, chosen, config, pool):
        start = time.perf_counter()
        results = list(search_budgets(problems, chosen, config, pool=pool))
        seconds = time.perf_counter() - start
        print(f"{label}: {seconds:7.1f} s")
        return results, seconds

    halving = SearchConfig(mode="halving", max_new_tokens=max_new_tokens)
    memo = Memo(backend)  # empty: the batched run generates everything, and fills it
    batched, batched_s = timed("halving, batched rounds      ", memo, halving, pool=questions)
    single, single_s = timed("halving, one question at a time", OneAtATime(backend), halving, pool=1)
    result["wall_time"] = {"batched_s": round(batched_s, 1), "one_at_a_time_s": round(single_s, 1),
                           "speedup": round(single_s / batched_s, 2),
                           "same_budgets": by_id(batched) == by_id(single)}
    result["modes"] = {}
    for mode in ("halving", "elastic", "bisect"):
        results = list(search_budgets(problems, memo, SearchConfig(mode=mode, max_new_tokens=max_new_tokens), pool=questions))
        result["modes"][mode] = per_question(results)
        m = result["modes"][mode]
        print(f"{mode:8s}: {m['feasible']}/{m['questions']} feasible, {m['calls_per_question']:.2f} calls and "
              f"{m['tokens_per_question']:.0f} tokens per question, mean budget {m['mean_budget']}")
    result["load_average_after"] = os.getloadavg()
    print(f"batched rounds are {result['wall_time']['speedup']}x faster than one question at a time")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
