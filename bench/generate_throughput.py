"""Output tokens per second of a reasoner at batch 1 and batch 8, fp32 and bf16, in one run.

    python bench/generate_throughput.py [--model default] [--new-tokens 96] [--out bench/results/generate_throughput.json]

The prompts are the first GSM8K test questions (vanilla CoT prompt); most answers run past
``--new-tokens``, so every configuration decodes about the same number of tokens.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import click

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "test.jsonl"


@click.command()
@click.option("--model", default="default", show_default=True)
@click.option("--new-tokens", type=int, default=96, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/generate_throughput.json"))
def main(model: str, new_tokens: int, threads: int, out: Path) -> None:
    import torch

    from data_builder.sources import load_problems
    from reasoner.backends.hf import HFBackend, HFConfig
    from reasoner.prompts import reasoning_prompt

    if not DATA.is_file():
        raise click.ClickException(f"benchmark data not found: {DATA} (the shared data sets must sit beside the repo)")
    torch.set_num_threads(threads)
    problems = load_problems(f"gsm8k:{DATA}", limit=8)
    prompts = [reasoning_prompt(p.question) for p in problems]
    rows = []
    for dtype in ("float32", "bfloat16"):
        backend = HFBackend(HFConfig(model=model, device="cpu", dtype=dtype, batch_size=8))
        backend.generate(prompts[:1], max_new_tokens=4)  # warm-up
        for batch in (1, 8):
            start = time.perf_counter()
            generations = backend.generate(prompts[:batch], max_new_tokens=new_tokens)
            seconds = time.perf_counter() - start
            tokens = sum(g.output_tokens for g in generations)
            rows.append({"dtype": dtype, "batch": batch, "output_tokens": tokens, "seconds": round(seconds, 2),
                         "tokens_per_s": round(tokens / seconds, 2)})
            print(f"{dtype:9s} batch {batch}: {tokens:5d} tokens in {seconds:6.1f} s = {tokens / seconds:6.2f} tok/s")
        del backend
    base = next(r for r in rows if r["dtype"] == "float32" and r["batch"] == 1)["tokens_per_s"]
    for row in rows:
        row["speedup_vs_fp32_batch1"] = round(row["tokens_per_s"] / base, 2)
    result = {"model": model, "new_tokens": new_tokens, "threads": threads, "cpu": platform.processor() or platform.machine(),
              "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
