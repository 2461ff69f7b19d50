"""The ladder build's output tokens per second against the engine's plain batch throughput.

The build logs every backend call (``ladder-calls-*.jsonl``: prompts, output tokens, the longest answer,
seconds, threads, load average); this reads those logs and, with ``--plain N``, times the same engine on N
vanilla prompts in plain batches (what ``tale generate`` does: prompts ordered by prompt length only), so the
two rates come from one machine. The issue's target: the build at >= 0.9x the plain rate.

    python bench/ladder_throughput.py --ladder artifacts/ladder/train-gsm8k --plain 48 \\
        --dataset gsm8k:path/to/gsm8k/test.jsonl --model runs/reasoner-sft-lengths --precision int8 --batch-size 16 \\
        --threads 2 --out bench/results/ladder_throughput.json

Static batches run until their longest row ends: ``padding`` is the share of row-steps spent on rows that had
already finished (1 - output tokens / (prompts x longest)), the waste the build's grouping by expected length
is there to cut. On vLLM (``--backend vllm``, run with .venv-vllm/bin/python) finished rows free their slot at once, so
its ``padding`` is only an upper bound on waste.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path


def call_stats(calls: list[dict]) -> dict:
    tokens = sum(c["output_tokens"] for c in calls)
    seconds = sum(c["seconds"] for c in calls)
    slots = sum(c["prompts"] * c["longest"] for c in calls)
    return {"calls": len(calls), "output_tokens": tokens, "seconds": round(seconds, 1),
            "tokens_per_second": tokens / seconds if seconds else None, "padding": 1 - tokens / slots if slots else None}


def read_calls(directories: list[Path]) -> list[dict]:
    calls = []
    for directory in directories:
        for path in sorted(directory.glob("ladder-calls-*.jsonl")):
            calls += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not calls:
        raise SystemExit(f"no ladder-calls-*.jsonl in {', '.join(map(str, directories))}: build with tale build --search ladder first")
    return calls


def plain_rate(args: argparse.Namespace) -> dict:
    from data_builder.sources import load_problems
    from reasoner.backends import SamplingConfig, make_backend
    from reasoner.prompts import reasoning_prompt

    problems = load_problems(args.dataset, limit=args.plain, seed=args.seed)
    sampling = SamplingConfig(temperature=args.temperature, seed=0)
    if args.backend == "vllm":  # the build's engine settings: every prompt in flight at once
        backend = make_backend("vllm", args.model, sampling=sampling, dtype=args.dtype, max_num_seqs=args.batch_size, threads=args.threads)
    else:
        backend = make_backend("ort", args.model, sampling=sampling, precision=args.precision, batch_size=args.batch_size,
                               threads=args.threads)
    prompts = [reasoning_prompt(p.question, kind=p.kind, options=p.options, language=p.language) for p in problems]
    backend.generate(prompts[:2], 8)  # warm up: the first call of a session pays for its allocations
    load = os.getloadavg()[0]
    began = time.perf_counter()
    generations = backend.generate(prompts, args.max_new_tokens)
    seconds = time.perf_counter() - began
    tokens = sum(g.output_tokens for g in generations)
    slots = len(prompts) * max(g.output_tokens for g in generations)  # a single static batch when N <= batch size
    return {"questions": len(prompts), "output_tokens": tokens, "seconds": round(seconds, 1), "tokens_per_second": tokens / seconds,
            "padding": 1 - tokens / slots if len(prompts) <= args.batch_size else None,
            "load_before": load, "load_after": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ladder", type=Path, action="append", required=True, help="Ladder directory (repeat).")
    parser.add_argument("--rung", action="append", default=None,
                        help="Count only the calls of this rung (repeat; 'every rung' for the together calls of vllm/openai builds).")
    parser.add_argument("--plain", type=int, default=0, help="Also time N vanilla prompts in plain batches on the same engine.")
    parser.add_argument("--dataset", default="gsm8k:../shared/data/gsm8k/test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="runs/reasoner-sft-lengths")
    parser.add_argument("--backend", choices=("ort", "vllm"), default="ort", help="The build's engine (vllm: run in its environment).")
    parser.add_argument("--precision", default="int8", help="ort: the model's precision.")
    parser.add_argument("--dtype", default="float32", help="vllm: the weights' dtype.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    calls = [c for c in read_calls(args.ladder) if args.rung is None or c["rung"] in args.rung]
    if not calls:
        raise SystemExit(f"no calls of rung {', '.join(args.rung)} in {', '.join(map(str, args.ladder))}")
    by_rung = defaultdict(list)
    for c in calls:
        by_rung[c["rung"]].append(c)
    report = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
              "ladders": [str(d) for d in args.ladder], "build": call_stats(calls),
              "build_threads": sorted({c["threads"] for c in calls}, key=str),
              "build_load": [min(c["load"] for c in calls), max(c["load"] for c in calls)],
              "per_rung": {rung: call_stats(cs) for rung, cs in by_rung.items()}}
    if args.plain:
        report["plain"] = plain_rate(args)
        report["plain"]["settings"] = {k: getattr(args, k) for k in ("model", "precision", "batch_size", "threads", "temperature",
                                                                       "max_new_tokens")}
        report["ratio"] = report["build"]["tokens_per_second"] / report["plain"]["tokens_per_second"]
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
