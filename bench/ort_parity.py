"""Which onnxruntime-genai precision keeps the hf backend's answers: the ort backend's default.

    python bench/ort_parity.py [--limit 200] [--variants int8,int4,int4-asym,int4-b128,fp32] [--out runs/ort-parity]

Measured as ``python bench/ort_parity.py --variants int8,int4,int4-asym,int4-b128`` and then
``python bench/ort_parity.py --variants fp32 --limit 96`` (fp32 decodes at half the speed); the JSON
keeps every variant measured, each with its own ``limit`` and ``n``.

Each variant answers the same GSM8K test questions as the committed hf fp32 run (vanilla CoT,
greedy, 384 new tokens, batch 8: ``--reference``), through ``tale.eval.evaluate`` (so an interrupted run
resumes with the same command; OUT/VARIANT/ holds each variant's run). Against the reference, per variant: accuracy and mean output tokens,
the discordant pairs and a two-sided exact sign test, the share of identical final answers and of
identical texts, and the variant's own generation speed (its output tokens over its wall time, one
thread, batch 8). The default is the fastest variant whose accuracy is within 2 points of hf's and
not significantly lower (p >= 0.05); ``bench/generate_throughput.py`` measures the speeds side by side.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from statistics import mean

import click
from paired_runs import rows, sign_test

from reasoner.backends.ort_build import PRESETS as VARIANTS  # name -> (builder precision, builder options)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
REFERENCE = REPO / "artifacts" / "eval-300" / "runs" / "gsm8k-test__default__vanilla__8ac910be"



def compare(run_dir: Path, reference: dict, wall_seconds: float) -> dict:
    run = rows(run_dir)
    ids = [i for i in run if i in reference]
    a, b = [run[i] for i in ids], [reference[i] for i in ids]
    gained = sum(x.correct and not y.correct for x, y in zip(a, b))
    lost = sum(y.correct and not x.correct for x, y in zip(a, b))
    return {
        "n": len(ids),
        "accuracy": round(mean(x.correct for x in a), 4),
        "hf_accuracy": round(mean(y.correct for y in b), 4),
        "mean_output_tokens": round(mean(x.output_tokens for x in a), 1),
        "hf_mean_output_tokens": round(mean(y.output_tokens for y in b), 1),
        "gained": gained, "lost": lost, "sign_test_p": round(sign_test(gained, lost), 4),
        "same_final_answer": round(mean(x.predicted == y.predicted for x, y in zip(a, b)), 4),
        "same_text": round(mean(x.text == y.text for x, y in zip(a, b)), 4),
        "tokens_per_s": round(sum(x.output_tokens for x in a) / wall_seconds, 1) if wall_seconds else None,
    }


@click.command()
@click.option("--limit", type=int, default=200, show_default=True)
@click.option("--variants", default=",".join(VARIANTS), show_default=True)
@click.option("--reference", type=click.Path(exists=True, file_okay=False, path_type=Path), default=REFERENCE)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/ort-parity"), show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path), default=Path("bench/results/ort_parity.json"), show_default=True)
def main(limit: int, variants: str, reference: Path, threads: int, out: Path, json_out: Path) -> None:
    from tqdm import tqdm

    from reasoner.backends.ort import ORTBackend, ORTConfig
    from tale.eval.evaluate import EvalConfig, evaluate

    if not DATA.is_file():
        raise click.ClickException(f"benchmark data not found: {DATA} (the shared data sets must sit beside the repo)")
    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    if unknown := [v for v in chosen if v not in VARIANTS]:
        raise click.BadParameter(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}", param_hint="--variants")
    hf = rows(reference)
    previous = json.loads(json_out.read_text()).get("variants", {}) if json_out.is_file() else {}
    result = {"reference": str(reference.relative_to(REPO)) if reference.is_relative_to(REPO) else str(reference),
              "dataset": "gsm8k test (seeded subset, seed 0)", "limit": limit, "max_new_tokens": 384, "batch_size": 8,
              "threads": threads, "cpu": platform.processor() or platform.machine(),
              "variants": previous}  # another invocation's variants (e.g. a smaller --limit for fp32) stay
    for name in chosen:
        precision, extra = VARIANTS[name]
        # The engine string is the run's identity: another precision or option is another run.
        engine = "ort:" + precision + "".join(f",{k}={v}" for k, v in extra)
        # The dataset as the reference run names it (from the repo root), so the runs are comparable.
        # One evaluation directory per variant: a run's name leaves the engine out, and a changed engine is refused.
        config = EvalConfig(dataset=f"gsm8k:{os.path.relpath(DATA)}", out=out / name, model="default", backend=engine, limit=limit, seed=0,
                            max_new_tokens=384, chunk=8)
        backend = ORTBackend(ORTConfig(precision=name, batch_size=8, threads=threads))
        load_before = os.getloadavg()
        with tqdm(total=limit, desc=name, unit="q") as bar:
            done = evaluate(config, backend, None, on_row=lambda row: bar.update(1))
        del backend
        row = compare(config.run_dir, hf, done.summary.wall_seconds)
        row |= {"limit": limit, "engine": engine, "run": str(config.run_dir), "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()]}
        result["variants"][name] = row
        print(f"{name:10s} acc {row['accuracy']:.3f} (hf {row['hf_accuracy']:.3f}, +{row['gained']} -{row['lost']}, "
              f"p={row['sign_test_p']}), tokens {row['mean_output_tokens']} (hf {row['hf_mean_output_tokens']}), "
              f"same answer {row['same_final_answer']:.1%}, same text {row['same_text']:.1%}, {row['tokens_per_s']} tok/s")
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")  # after each variant: a stopped run keeps the rest
    print(f"saved {json_out}")


if __name__ == "__main__":
    main()
