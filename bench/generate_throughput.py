"""Output tokens per second of the generation engines side by side: hf (transformers) and ort
(onnxruntime-genai) at batch 1, 8 and 16, on the same prompts, interleaved, in one run.

    python bench/generate_throughput.py [--engines hf:float32:1,ort:int8:1,ort:int4:1,ort:int4-b128:1,ort:fp32:1,ort:int8:2]
        [--batches 1,8,16] [--new-tokens 128] [--model default] [--out bench/results/generate_throughput.json]

An engine is KIND:PRECISION:THREADS (hf: a torch dtype; ort: a --precision preset). The prompts are
the first GSM8K test questions under the vanilla CoT prompt; most answers run past ``--new-tokens``,
so every configuration decodes about the same number of tokens. For each batch size every engine
runs once before the next batch size starts, so a change of load on the machine touches them all
alike; the load average is recorded before and after each measurement. Speedups are against the
first engine at the same batch size.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import click

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def load(spec: str, model: str):

    from reasoner.backends.hf import HFBackend, HFConfig
    from reasoner.backends.ort import ORTBackend, ORTConfig

    kind, precision, threads = spec.split(":")
    if kind == "hf":
        return HFBackend(HFConfig(model=model, device="cpu", dtype=precision, batch_size=16)), int(threads)
    if kind == "ort":
        return ORTBackend(ORTConfig(model=model, precision=precision, batch_size=16, threads=int(threads))), int(threads)
    raise click.BadParameter(f"engine kind must be hf or ort, got {spec!r}", param_hint="--engines")


@click.command()
@click.option("--engines", default="hf:float32:1,ort:int8:1,ort:int4:1,ort:int4-b128:1,ort:fp32:1,ort:int8:2", show_default=True)
@click.option("--batches", default="1,8,16", show_default=True)
@click.option("--new-tokens", type=int, default=128, show_default=True)
@click.option("--model", default="default", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/generate_throughput.json"))
def main(engines: str, batches: str, new_tokens: int, model: str, out: Path) -> None:
    import torch

    from data_builder.sources import load_problems
    from reasoner.prompts import reasoning_prompt

    if not DATA.is_file():
        raise click.ClickException(f"benchmark data not found: {DATA} (the shared data sets must sit beside the repo)")
    sizes = [int(b) for b in batches.split(",")]
    specs = [e.strip() for e in engines.split(",") if e.strip()]
    problems = load_problems(f"gsm8k:{DATA}", limit=max(sizes))
    prompts = [reasoning_prompt(p.question) for p in problems]
    loaded = {}
    for spec in specs:
        backend, threads = load(spec, model)
        torch.set_num_threads(threads)
        backend.generate(prompts[:1], max_new_tokens=4)  # warm-up
        loaded[spec] = (backend, threads)
    rows = []
    for batch in sizes:
        for spec, (backend, threads) in loaded.items():
            torch.set_num_threads(threads)  # the hf backend's threads; ort's are fixed at load
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            generations = backend.generate(prompts[:batch], max_new_tokens=new_tokens)
            seconds = time.perf_counter() - start
            tokens = sum(g.output_tokens for g in generations)
            rows.append({"engine": spec, "batch": batch, "threads": threads, "output_tokens": tokens,
                         "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 2),
                         "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)})
            print(f"{spec:14s} batch {batch:2d}: {tokens:5d} tokens in {seconds:6.1f} s = {tokens / seconds:6.2f} tok/s "
                  f"(load {load_before:.2f} -> {os.getloadavg()[0]:.2f})", flush=True)
    for row in rows:
        base = next(r for r in rows if r["engine"] == specs[0] and r["batch"] == row["batch"])["tokens_per_s"]
        row[f"speedup_vs_{specs[0]}"] = round(row["tokens_per_s"] / base, 2)
    result = {"model": model, "new_tokens": new_tokens, "engines": specs, "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
