"""How far int8 budgets move from fp32's, and what each int8 variant costs, on one exported regressor.

    python bench/int8_variants.py --export runs/predictor-onnx [--questions 500] [--out bench/results/int8_variants.json]

From the export's fp32 graph, three int8 models are quantized in a temporary directory with the
settings of ``export.onnx.ExportConfig``: per-tensor scales on every matmul (the export before the
down projections were kept in fp32), per-channel scales on every matmul (``tale export --int8-all``),
and per-channel with the feed-forward down projections in fp32 (the default); and, outside the export,
onnxruntime's block-wise 8-bit weights (``MatMulNBits``, blocks of 32 along the input, int8
activations per block: accuracy level 4), whose finer scales might allow every matmul. Each one's budgets,
rounded and clamped as ``tale estimate`` gives them, are compared with fp32's on the first
``--questions`` GSM8K test questions (held out: the regressors train on GSM8K train), and the p50
latency at batch 1 and one thread is taken as ``estimator_latency.py`` takes it (engines taking turns).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
from estimator_latency import interleaved_batch1  # bench/ is on sys.path when run as a script

from export.manifest import ExportManifest, RuntimeConfig
from export.onnx import ExportConfig, quantize_int8
from export.runtime import OnnxEstimator, cpu_session

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "test.jsonl"
VARIANTS = {
    "per-tensor, all matmuls": ExportConfig(int8=True, per_channel=False, fp32_down_projections=False),
    "per-channel, all matmuls (--int8-all)": ExportConfig(int8=True, fp32_down_projections=False),
    "per-channel, down projections fp32 (default)": ExportConfig(int8=True),
    "8-bit blocks of 32, all matmuls (MatMulNBits)": None,
}
BLOCK = 32


def block_int8(source: Path, target: Path) -> list[str]:
    """Every weight matmul as MatMulNBits: 8-bit weights with a scale per block of ``BLOCK`` inputs.
    Returns the matmuls kept in fp32 (none), as ``quantize_int8`` does."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=BLOCK, is_symmetric=True, accuracy_level=4, bits=8,
                                          quant_format=QuantFormat.QOperator)
    quantizer = MatMulNBitsQuantizer(str(source), bits=8, block_size=BLOCK, is_symmetric=True, accuracy_level=4,
                                     algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), False)
    return []


@click.command()
@click.option("--export", "export", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A tale export directory (its fp32 model is quantized here).")
@click.option("--questions", type=click.IntRange(min=16), default=500, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/int8_variants.json"), show_default=True)
def main(export: Path, questions: int, out: Path) -> None:
    import numpy as np

    manifest = ExportManifest.load(export)
    texts = [json.loads(line)["question"] for line in DATA.read_text().splitlines()[:questions]]
    engines = {"fp32": OnnxEstimator.load(export, RuntimeConfig(precision="fp32", threads=1))}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, config) in enumerate(VARIANTS.items()):
            path = Path(tmp) / f"variant{index}.onnx"
            if config is None:
                kept = block_int8(export / manifest.models["fp32"].file, path)
            else:
                kept = quantize_int8(export / manifest.models["fp32"].file, path, config)
            # The export's tokenizer and target, this variant's graph.
            engines[name] = OnnxEstimator(cpu_session(str(path), 1), engines["fp32"].tokenizer, manifest, "int8")
            click.echo(f"{name}: {len(kept)} matmuls kept in fp32, {path.stat().st_size / 2**20:.1f} MiB")
        fp32 = np.asarray(engines["fp32"].predict(texts), dtype=float)
        result: dict = {"export": str(export), "questions": len(texts), "fp32_mean_budget": float(fp32.mean()), "variants": {}}
        latency = interleaved_batch1({name: e.predict for name, e in engines.items()}, texts)
        for name in engines:
            row = {"p50_ms": latency[name]["p50_ms"]}
            if name != "fp32":
                budgets = np.asarray(engines[name].predict(texts), dtype=float)
                change = np.abs(budgets - fp32) / fp32
                row.update(mean_change=round(float(change.mean()), 4), max_change=round(float(change.max()), 4),
                           beyond_5_percent=int((change > 0.05).sum()), mean_budget=float(budgets.mean()))
            result["variants"][name] = row
            click.echo(f"{name:48s} " + ", ".join(f"{k} {v}" for k, v in row.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"saved {out}")


if __name__ == "__main__":
    main()
