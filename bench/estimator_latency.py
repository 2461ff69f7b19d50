"""What a budget estimate costs on a CPU: the BERT regressor on torch and on onnxruntime (fp32, int8)
against the zero-shot LLM estimator, on the same GSM8K test questions in one run.

    python bench/estimator_latency.py --predictor runs/predictor [--questions 128] [--threads 1,2]
        [--llm-questions 5] [--out bench/results/estimator_latency.json]

- Latency per question at batch 1 (p50, p99) and throughput at batch 32 (questions/s over every full
  batch of 32), for torch eager fp32, ORT fp32 and ORT int8 at each thread count, the three taking
  turns 16 questions (one batch) at a time, so that a slow spell of the machine falls on all of them
  alike; each turn begins with a short rest and one untimed call (see ``take_turns``). Every call is
  end to end, question text in, budget out, so tokenization is included for all of them.
- The zero-shot LLM estimator (``predictor.llm``) on ``--llm-model`` at batch 1 only, on the first
  ``--llm-questions`` questions (0 skips it), at the highest thread count, after one warm-up question.
- Parity on all questions: ORT fp32 against torch (predicted budgets before rounding, and the budgets),
  ORT int8 against ORT fp32 (budgets). The GSM8K test split is never trained on, so these are held-out questions.
- The encoder's FLOPs per question at the mean tokenized length, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention, 2 FLOPs per multiply-add;
  layer norms, softmax and GELU are left out, a few percent), set against this CPU's fp32 matmul rate
  (a 1024x1024 matmul at the same thread count): the fraction of the machine's limit each engine reaches.

The regressor is exported into a temporary directory for the run. Ratios are computed from the same
run only; the load average at the start is recorded because a busy machine slows everything.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "test.jsonl"
BATCH = 32
TURN = 16  # questions per turn at batch 1
SETTLE = 0.2  # seconds of rest before each turn

Predict = Callable[[Sequence[str]], list[int]]


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _percentiles(seconds: Sequence[float]) -> dict:
    import numpy as np

    p50, p99 = np.percentile(seconds, [50, 99]) * 1e3
    return {"n": len(seconds), "p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(np.mean(seconds)) * 1e3, 3)}


def take_turns(engines: dict[str, Predict], inputs: Sequence[Sequence[str]], block: int) -> dict[str, list[float]]:
    """Seconds per call of each engine on each input, the engines taking turns ``block`` inputs at a
    time (in a rotating order), so that a slow spell of a shared machine falls on all of them alike.

    Each turn starts with a pause of ``SETTLE`` seconds and one untimed call: the pause lets the thread
    pool of the engine before stop spinning (idle torch and onnxruntime workers spin for a while and
    would steal a core), the call wakes this engine's pool. Taking turns call by call instead inflated
    every engine's latency at 2 threads.
    """
    names = list(engines)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for turn, first in enumerate(range(0, len(inputs), block)):
        chunk = inputs[first : first + block]
        for name in names[turn % len(names):] + names[: turn % len(names)]:
            time.sleep(SETTLE)
            engines[name](chunk[0])
            for item in chunk:
                start = time.perf_counter()
                engines[name](item)
                seconds[name].append(time.perf_counter() - start)
    return seconds


def interleaved_batch1(engines: dict[str, Predict], questions: Sequence[str]) -> dict[str, dict]:
    """Latency per question at batch 1, the engines taking turns ``TURN`` questions at a time."""
    seconds = take_turns(engines, [[q] for q in questions], block=TURN)
    return {name: _percentiles(s) for name, s in seconds.items()}


def interleaved_batch32(engines: dict[str, Predict], questions: Sequence[str]) -> dict[str, dict]:
    """Throughput at batch 32 over every full batch, the engines taking turns batch by batch."""
    batches = [questions[i : i + BATCH] for i in range(0, len(questions) - BATCH + 1, BATCH)]
    seconds = take_turns(engines, batches, block=1)
    n = BATCH * len(batches)
    return {name: {"n": n, "questions_per_s": round(n / sum(s), 2), "ms_per_question": round(sum(s) / n * 1e3, 3)}
            for name, s in seconds.items()}


def matmul_gflops(threads: int, size: int = 1024, repeats: int = 10) -> float:
    """This CPU's fp32 matmul rate at ``threads``: the practical limit for an encoder's matmuls."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return round(2 * size**3 * repeats / (time.perf_counter() - start) / 1e9, 2)


def encoder_flops(regressor, length: int) -> int:
    """FLOPs of one forward pass on one question of ``length`` tokens."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    inputs = {"input_ids": torch.full((1, length), 1000, dtype=torch.long),
              "attention_mask": torch.ones((1, length), dtype=torch.long)}
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        regressor.model(**inputs)
    return int(counter.get_total_flops())


def parity(torch_float: list[float], fp32_float: list[float], torch_budgets: list[int], fp32: list[int],
           int8: list[int]) -> dict:
    """ORT fp32 against torch on the predicted budgets before rounding (and after), int8 against fp32."""
    import numpy as np

    t, o = np.asarray(torch_float), np.asarray(fp32_float)
    deviation = np.abs(np.asarray(int8) - np.asarray(fp32)) / np.asarray(fp32)
    return {
        "fp32_budget_max_abs_diff": float(np.abs(o - t).max()),
        "fp32_budget_max_rel_diff": float((np.abs(o - t) / t).max()),
        "fp32_budgets_equal_torch": float(np.mean(np.asarray(fp32) == np.asarray(torch_budgets))),
        "int8_budget_max_rel_dev": float(deviation.max()),
        "int8_budget_mean_rel_dev": float(deviation.mean()),
        "int8_budgets_within_5pct": float(np.mean(deviation <= 0.05)),
    }


def llm_row(model: str, questions: Sequence[str], threads: int) -> dict:
    import torch

    from predictor.llm import LLMEstimator
    from reasoner.backends.hf import HFBackend, HFConfig

    torch.set_num_threads(threads)
    estimator = LLMEstimator(HFBackend(HFConfig(model=model, device="cpu", dtype="float32", batch_size=1)))
    estimator.predict(["Warm-up: what is 2 + 2?"])
    spent, fallbacks = estimator.tokens_spent, estimator.fallbacks
    seconds = []
    for question in questions:
        start = time.perf_counter()
        estimator.predict([question])
        seconds.append(time.perf_counter() - start)
    timing = _percentiles(seconds)
    return {"engine": "llm zero-shot", "model": model, "threads": threads, "batch1": timing,
            "tokens_per_question": round((estimator.tokens_spent - spent) / len(questions), 1),
            "fallbacks": estimator.fallbacks - fallbacks}


def side_by_side(rows: list[dict], low: int, high: int) -> dict[str, float]:
    """Speed-ups from this run's rows: (slower engine) over (faster one), at the same thread count."""

    def row(engine: str, n: int) -> dict:
        return next(r for r in rows if r["engine"] == engine and r["threads"] == n)

    def p50(engine: str, n: int) -> float:
        return row(engine, n)["batch1"]["p50_ms"]

    def qps(engine: str, n: int) -> float:
        return row(engine, n)["batch32"]["questions_per_s"]

    ratios = {
        f"torch_fp32_over_ort_int8_b1_p50_{low}t": p50("torch fp32", low) / p50("ort int8", low),
        f"torch_fp32_over_ort_fp32_b1_p50_{low}t": p50("torch fp32", low) / p50("ort fp32", low),
        f"ort_int8_over_torch_fp32_b32_qps_{low}t": qps("ort int8", low) / qps("torch fp32", low),
        f"ort_int8_over_ort_fp32_b32_qps_{low}t": qps("ort int8", low) / qps("ort fp32", low),
    }
    if high != low:
        ratios[f"ort_int8_{high}t_over_{low}t_b32_qps"] = qps("ort int8", high) / qps("ort int8", low)
    if any(r["engine"] == "llm zero-shot" for r in rows):
        ratios[f"llm_over_ort_int8_b1_p50_{high}t"] = p50("llm zero-shot", high) / p50("ort int8", high)
    return {k: round(v, 2) for k, v in ratios.items()}


def table(rows: list[dict], flops: int) -> str:
    lines = [f"{'engine':16s} {'threads':>7s} {'b1 p50 ms':>10s} {'b1 p99 ms':>10s} {'b32 q/s':>9s} {'GFLOP/s b1':>11s} {'of fp32 matmul':>15s}"]
    for r in rows:
        b1, b32 = r["batch1"], r.get("batch32")
        rate = flops / (b1["p50_ms"] / 1e3) / 1e9 if "matmul_gflops" in r else None
        lines.append(f"{r['engine']:16s} {r['threads']:7d} {b1['p50_ms']:10.2f} {b1['p99_ms']:10.2f} "
                     f"{b32['questions_per_s'] if b32 else float('nan'):9.1f} "
                     f"{rate if rate else float('nan'):11.2f} {(rate / r['matmul_gflops']) if rate else float('nan'):15.1%}")
    return "\n".join(lines)


@click.command()
@click.option("--predictor", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A trained BertRegressor directory (tale train-predictor); it is exported to ONNX for the run.")
@click.option("--questions", type=click.IntRange(min=BATCH), default=128, show_default=True, help="GSM8K test questions.")
@click.option("--threads", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--llm-questions", type=click.IntRange(min=0), default=5, show_default=True, help="Questions for the LLM estimator; 0 skips it.")
@click.option("--llm-model", default="default", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/estimator_latency.json"), show_default=True)
def main(predictor: Path, questions: int, threads: str, llm_questions: int, llm_model: str, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from data_builder.sources import load_problems
    from export.onnx import ExportConfig, export_regressor
    from export.runtime import OnnxEstimator, RuntimeConfig
    from predictor.bert import BertRegressor
    from predictor.target import RegressorMeta

    if not DATA.is_file():
        raise click.ClickException(f"benchmark data not found: {DATA} (the shared data sets must sit beside the repo)")
    try:
        RegressorMeta.load(predictor)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(f"--predictor must be a trained BERT regressor directory: {error}") from None
    counts = [int(t) for t in threads.split(",")]
    texts = [p.question for p in load_problems(f"gsm8k:{DATA}", limit=questions)]
    load_average = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="tale-bench-"))
    start = time.perf_counter()
    manifest = export_regressor(predictor, scratch, ExportConfig(int8=True))
    export_seconds = time.perf_counter() - start

    rows, outputs = [], {}
    for n in counts:
        torch.set_num_threads(n)
        regressor = BertRegressor.load(predictor, device="cpu")
        engines = {"torch fp32": regressor,
                   "ort fp32": OnnxEstimator.load(scratch, RuntimeConfig(precision="fp32", threads=n)),
                   "ort int8": OnnxEstimator.load(scratch, RuntimeConfig(precision="int8", threads=n))}
        peak = matmul_gflops(n)
        predicts = {name: engine.predict for name, engine in engines.items()}
        latency, throughput = interleaved_batch1(predicts, texts), interleaved_batch32(predicts, texts)
        for name, engine in engines.items():
            rows.append({"engine": name, "threads": n, "matmul_gflops": peak, "batch1": latency[name],
                         "batch32": throughput[name]})
            print(f"{name} at {n} threads: p50 {rows[-1]['batch1']['p50_ms']:.2f} ms, {rows[-1]['batch32']['questions_per_s']} q/s")
            outputs.setdefault(name, (engine.predict_float(texts), engine.predict(texts)))
    lengths = engines["ort fp32"].encode(texts)["attention_mask"].sum(axis=1)
    mean_length = float(lengths.mean())
    flops = encoder_flops(regressor, round(mean_length))
    if llm_questions:
        rows.append(llm_row(llm_model, texts[:llm_questions], max(counts)))

    ratios = side_by_side(rows, min(counts), max(counts))
    result = {
        "predictor": str(predictor), "encoder": manifest.encoder, "questions": len(texts), "dataset": DATA.name,
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "load_average_at_start": load_average,
        "versions": manifest.versions, "export_seconds": round(export_seconds, 2),
        "model_bytes": {p: f.bytes for p, f in manifest.models.items()},
        "mean_tokens_per_question": round(mean_length, 1), "max_tokens_per_question": int(lengths.max()),
        "encoder_gflops_per_question": round(flops / 1e9, 4),
        "flops_method": "torch.utils.flop_counter.FlopCounterMode, batch 1 at the mean tokenized length",
        "rows": rows, "ratios": ratios,
        "parity": parity(torch_float=outputs["torch fp32"][0], fp32_float=outputs["ort fp32"][0], torch_budgets=outputs["torch fp32"][1],
                         fp32=outputs["ort fp32"][1], int8=outputs["ort int8"][1]),
    }
    print()
    print(table(rows, flops))
    print(f"\nencoder: {flops / 1e9:.3f} GFLOP per question at {mean_length:.1f} tokens (mean)")
    for key, value in result["ratios"].items():
        print(f"{key}: {value:.2f}x")
    print("parity: " + ", ".join(f"{k} {v:.3g}" for k, v in result["parity"].items()))
    shutil.rmtree(scratch)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
