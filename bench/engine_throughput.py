"""Output tokens per second of each engine at 1, 8, 16 and 32 prompts in flight, in one run (issue 47's engine table).

Each engine answers the first K GSM8K questions (vanilla CoT, greedy, at most ``--max-new-tokens``) in one call with
K prompts in flight: ``--batch-size K`` for hf and ort (one static batch), K sequences for vLLM (continuous batching).
A warm-up call first, then the timed one. vLLM runs in its own environment (``--vllm-python``, docs/engines.md): its
rows are measured by this script in a child process there, one after the others, never at the same time. The CPU's
flags that decide the kernels (avx2, avx512*, amx*) and the load average are recorded with every row.

    python bench/engine_throughput.py --dataset gsm8k:path/to/gsm8k/test.jsonl --model runs/reasoner-sft-lengths \\
        --engines hf,ort:int8,ort:int4-b128,vllm:float32 --vllm-python .venv-vllm/bin/python --threads 2 \\
        --out bench/results/engine_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted({f for f in flags if f.startswith(("avx2", "avx512", "amx", "avx_vnni"))})


def make(engine: str, model: str, in_flight: int, threads: int):
    from reasoner.backends import make_backend

    kind, _, setting = engine.partition(":")
    if kind == "ort":
        return make_backend("ort", model, precision=setting or "int8", batch_size=in_flight, threads=threads)
    if kind == "hf":
        return make_backend("hf", model, dtype=setting or "float32", device="cpu", batch_size=in_flight)
    if kind == "vllm":
        return make_backend("vllm", model, dtype=setting or "float32", max_num_seqs=in_flight, threads=threads)
    raise SystemExit(f"--engines: {engine!r} is not hf[:DTYPE], ort:PRECISION or vllm[:DTYPE]")


def measure(engine: str, args: argparse.Namespace) -> list[dict]:
    """Rows for one engine, one per in-flight count (one vLLM engine, sized for the largest)."""
    import torch

    from data_builder.sources import load_problems
    from reasoner.prompts import reasoning_prompt

    torch.set_num_threads(args.threads)
    counts = sorted(args.in_flight)
    problems = load_problems(args.dataset, limit=max(counts), split="test")
    prompts = [reasoning_prompt(p.question, kind=p.kind, options=p.options, language=p.language) for p in problems]
    shared = make(engine, args.model, max(counts), args.threads) if engine.startswith("vllm") else None
    rows = []
    for k in counts:
        backend = shared or make(engine, args.model, k, args.threads)
        backend.generate(prompts[:k], 8)  # warm-up: allocations, compiled kernels
        load = os.getloadavg()[0]
        began = time.perf_counter()
        generations = backend.generate(prompts[:k], args.max_new_tokens)
        seconds = time.perf_counter() - began
        tokens = sum(g.output_tokens for g in generations)
        rows.append({"engine": getattr(backend, "identity", engine), "in_flight": k, "output_tokens": tokens,
                     "seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds, 2), "load_before": load,
                     "load_after": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), file=sys.stderr)
        if shared is None:
            del backend
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="gsm8k:../shared/data/gsm8k/test.jsonl")
    parser.add_argument("--model", default="runs/reasoner-sft-lengths")
    parser.add_argument("--engines", default="hf,ort:int8,ort:int4-b128,vllm:float32")
    parser.add_argument("--in-flight", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 16, 32])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vllm-python", default=None, help="A Python whose environment has vLLM (docs/engines.md).")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # measure --engines here, print JSON rows
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    engines = args.engines.split(",")
    if args.child:
        print(json.dumps([row for engine in engines for row in measure(engine, args)]))
        return
    rows = []
    for engine in engines:
        if engine.startswith("vllm") and args.vllm_python:
            command = [args.vllm_python, __file__, "--child", "--engines", engine, "--dataset", args.dataset, "--model", args.model,
                       "--in-flight", ",".join(map(str, args.in_flight)), "--max-new-tokens", str(args.max_new_tokens),
                       "--threads", str(args.threads)]
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
            rows += json.loads(done.stdout.strip().splitlines()[-1])
        else:
            rows += measure(engine, args)
    report = {"bench": "engine_throughput", "model": args.model, "dataset": args.dataset, "max_new_tokens": args.max_new_tokens,
              "threads": args.threads, "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
              "cpu_flags": cpu_flags(), "rows": rows}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
