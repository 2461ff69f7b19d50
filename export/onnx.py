"""Export a trained BERT regressor to ONNX, fp32 and optionally int8, and check it against torch.

``export_regressor(source, out, config)`` loads the regressor on the CPU, traces a small wrapper
that returns only the [batch, 1] regression output with the TorchScript exporter
(``dynamo=False``: it takes ``dynamic_axes`` and its graph quantizes as it is; the dynamo exporter
gains nothing for a plain encoder), writes the tokenizer and quantizes the weights to int8 when
asked. Before the manifest is written, the export is run on onnxruntime against torch on a few
probe questions: identical token ids, and fp32 outputs within ``config.tolerance``, or it fails.
The manifest is written last, so an interrupted export leaves no loadable directory.
``export_curves`` does the same for a BERT curve estimator (``predictor.bert_curves``): 2 outputs per rung.

torch and transformers are imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from export.manifest import (
    MANIFEST_FILE,
    MODEL_FILES,
    TOKENIZER_FILE,
    CurvesManifest,
    ExportedFile,
    ExportManifest,
    RuntimeConfig,
    sha256,
)
from predictor.calibrate import CALIBRATION_FILE
from predictor.target import RegressorMeta, as_json
from reasoner.errors import ConfigError, InputError, TaleError

logger = logging.getLogger(__name__)


class ExportMismatchError(TaleError, RuntimeError):
    """The ONNX export does not reproduce the regressor on the probe questions: nothing loadable is left."""

# Traced (the first two: different lengths, so the trace sees padding and keeps the attention mask)
# and then run on both engines. The last is longer than any max_length, so truncation is checked.
PROBES = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "What is 6 * 7?",
    "",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    " ".join(["A very long question that must be truncated."] * 120),
)


@dataclass(frozen=True)
class ExportConfig:
    """One export of a BERT regressor directory."""

    int8: bool = False  # also write model.int8.onnx: weights dynamically quantized to int8 (QInt8)
    opset: int = 17  # ONNX opset; 17 is the first with a fused LayerNormalization op
    # int8: a scale per output channel instead of per tensor. Free in latency; on a regressor trained
    # on worked-solution lengths it cut the mean budget change against fp32 from 9.8% to 3.0%
    # (bench/int8_variants.py, 500 GSM8K test questions).
    per_channel: bool = True
    # int8: keep each layer's feed-forward down projection (the only weight matmuls with more inputs
    # than outputs) in fp32. Its input is the GELU output, whose few large values one int8 activation
    # scale cannot resolve (Bondarenko et al., 2021). On that regressor: mean change 1.6%, 490 of 500
    # budgets within 5% of fp32, for ~15% more latency than all-int8.
    fp32_down_projections: bool = True
    # int8: 7-bit weights. On x86 CPUs without VNNI (AVX2 only), onnxruntime's u8 x s8 products
    # saturate in 16 bits with full 8-bit weights; on a tiny trained model that moved budgets ~3.4%
    # against ~0.9% with 7 bits. CPUs with VNNI lose little from it.
    reduce_range: bool = True
    tolerance: float = 1e-4  # fp32 ORT against torch on the probes: |diff| <= tolerance * max(1, |torch|)

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise ConfigError(f"opset must be >= 17, got {self.opset}")
        if not self.tolerance > 0:
            raise ConfigError(f"tolerance must be > 0, got {self.tolerance}")


def _raw_output_module(model: Any, input_names: Sequence[str]) -> Any:
    """``model`` as a module that takes the input tensors positionally and returns only the logits."""
    import torch

    class RawOutput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(input_names, inputs))).logits

    # The TorchScript exporter restores the module's training flag after tracing: eval the wrapper,
    # or dropout stays on in the graph.
    return RawOutput().eval()


@contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the expected noise of a legacy export: the deprecation notice and the tracer's notes on
    Python booleans (the padding length and is_causal branches, constant for an encoder)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator", category=UserWarning)
        yield


class _QuietQuantizer(logging.Filter):
    """quantize_dynamic logs to the root logger: a note per tensor it leaves alone, and a hint to
    pre-process shapes (symbolic shape inference fails on this graph's Min(positions, sequence), and
    with it skipped the pre-processing changed nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "pre-processing before quantization" not in record.getMessage()


def down_projections(path: Path) -> list[str]:
    """The MatMul nodes of ``path`` whose weight (an initializer) has more rows than columns: in a
    BERT-family encoder, each layer's feed-forward output projection (intermediate -> hidden)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    return [node.name for node in graph.node
            if node.op_type == "MatMul" and len(shape := shapes.get(node.input[1], [])) == 2 and shape[0] > shape[1]]


def quantize_int8(fp32: Path, int8: Path, config: ExportConfig) -> list[str]:
    """Dynamic quantization: int8 weights, activations quantized per batch at run time. Returns the
    names of the MatMul nodes left in fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = down_projections(fp32) if config.fp32_down_projections else []
    quiet = _QuietQuantizer()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=config.per_channel,
                         reduce_range=config.reduce_range, nodes_to_exclude=excluded)
    finally:
        logging.getLogger().removeFilter(quiet)
    return excluded


def _exported(directory: Path, name: str) -> ExportedFile:
    path = directory / name
    return ExportedFile(name, sha256(path), path.stat().st_size)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _check(source: Any, out: Path, precisions: Sequence[str], config: ExportConfig, load: Any) -> dict[str, float]:
    """Run the export (``load(out, runtime_config)``) on onnxruntime against the torch ``source`` on the probes: the same
    token ids, and every fp32 output within the tolerance, or raise."""
    import numpy as np

    questions = list(PROBES)
    expected = np.asarray(source.raw_outputs(questions))
    check: dict[str, float] = {"probes": len(questions)}
    for precision in precisions:
        runtime = load(out, RuntimeConfig(precision=precision, threads=1))
        ids = runtime.encode(questions)
        torch_ids = {k: v.numpy() for k, v in source.encode(questions).items()}
        if any(not np.array_equal(ids[k], torch_ids[k]) for k in torch_ids):
            raise ExportMismatchError(f"{out / TOKENIZER_FILE} tokenizes the probe questions differently from the source's tokenizer")
        diff = np.abs(np.asarray(runtime.raw_outputs(questions)) - expected)
        check[f"{precision}_max_abs_diff"] = float(diff.max())
        if precision == "fp32" and not np.all(diff <= config.tolerance * np.maximum(1.0, np.abs(expected))):
            raise ExportMismatchError(f"{out / MODEL_FILES['fp32']} disagrees with torch by up to {diff.max():.3g} "
                               f"(tolerance {config.tolerance}) on the probe questions")
    return check


def _prepare(source: Path, out: Path) -> None:
    if out.resolve() == source.resolve():
        raise ConfigError(f"export into a directory of its own, not the source's ({source})")
    out.mkdir(parents=True, exist_ok=True)
    for stale in (MANIFEST_FILE, *MODEL_FILES.values(), CALIBRATION_FILE):  # the manifest first: no half-old export loads
        (out / stale).unlink(missing_ok=True)


def _write_graph(model: Any, encode: Any, names: Sequence[str], output_name: str, out: Path, config: ExportConfig) -> list[str]:
    """Trace ``model`` (fed ``encode``-d probe questions) into fp32 ONNX, and quantize it to int8 where asked; the
    precisions written."""
    import torch

    example = encode(PROBES[:2])
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            _raw_output_module(model, names),
            tuple(example[n] for n in names),
            str(out / MODEL_FILES["fp32"]),
            dynamo=False,
            opset_version=config.opset,
            input_names=list(names),
            output_names=[output_name],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, output_name: {0: "batch"}},
        )
    precisions = ["fp32"]
    if config.int8:
        kept = quantize_int8(out / MODEL_FILES["fp32"], out / MODEL_FILES["int8"], config)
        logger.info("int8: %d MatMul nodes kept in fp32: %s", len(kept), kept)
        precisions.append("int8")
    return precisions


def _write_tokenizer(hf_tokenizer: Any, max_length: int, out: Path) -> dict[str, Any]:
    """The torch-free tokenizer, truncating and padding as ``hf_tokenizer`` does; its manifest fields."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())  # a copy: the source's stays as it is
    tokenizer.enable_truncation(max_length, direction=hf_tokenizer.truncation_side)
    tokenizer.enable_padding(direction=hf_tokenizer.padding_side, pad_id=hf_tokenizer.pad_token_id, pad_token=hf_tokenizer.pad_token)
    tokenizer.save(str(out / TOKENIZER_FILE))
    return {"pad_id": hf_tokenizer.pad_token_id, "pad_token": hf_tokenizer.pad_token, "padding_side": hf_tokenizer.padding_side,
            "truncation_side": hf_tokenizer.truncation_side, "tokenizer": _exported(out, TOKENIZER_FILE)}


def _checked_save(manifest: Any, source: Any, out: Path, precisions: Sequence[str], config: ExportConfig, load: Any) -> Any:
    """Save ``manifest`` (the runtime reads it), check the export against torch, and save it again with the check; an
    export that fails the check is left without a manifest, so it never loads."""
    manifest.save(out)
    try:
        check = _check(source, out, precisions, config, load)
    except Exception:
        (out / MANIFEST_FILE).unlink()
        raise
    manifest = replace(manifest, check=check)
    manifest.save(out)
    logger.info("exported %s to %s (%s): %s", manifest.source, out, ", ".join(precisions), check)
    return manifest


def export_regressor(source: Path, out: Path, config: ExportConfig = ExportConfig()) -> ExportManifest:
    """Export the BERT regressor saved in ``source`` into ``out`` (created; an earlier export is replaced)."""
    from export.runtime import OnnxEstimator
    from predictor.bert import BertRegressor

    source, out = Path(source), Path(out)
    meta = RegressorMeta.load(source)  # refuses anything but a log-target BERT regressor
    _prepare(source, out)
    regressor = BertRegressor.load(source, device="cpu")
    names = list(meta.input_names)
    precisions = _write_graph(regressor.model, regressor.encode, names, meta.output_name, out, config)
    tokenizer = _write_tokenizer(regressor.tokenizer, meta.max_length, out)
    calibrated = (source / CALIBRATION_FILE).is_file()
    if calibrated:  # the regressor's calibration travels with it, pinned like the graph
        shutil.copyfile(source / CALIBRATION_FILE, out / CALIBRATION_FILE)
    manifest = ExportManifest(
        target=meta.target, budget_range=meta.budget_range, max_length=meta.max_length, input_names=tuple(names),
        output_name=meta.output_name, source_fingerprint=meta.training_fingerprint,
        models={p: _exported(out, MODEL_FILES[p]) for p in precisions},
        calibration=_exported(out, CALIBRATION_FILE) if calibrated else None, opset=config.opset, source=str(source),
        encoder=meta.encoder, export_config=as_json(config), versions=_versions(), **tokenizer,
    )
    return _checked_save(manifest, regressor, out, precisions, config, OnnxEstimator.load)


def export_curves(source: Path, out: Path, config: ExportConfig = ExportConfig()) -> CurvesManifest:
    """Export the BERT curve estimator saved in ``source`` (``predictor.bert_curves``) into ``out``: its graph returns the
    2R outputs per question that ``CurveHead`` decodes, so ``export.runtime.OnnxCurves`` predicts the same curves."""
    from export.runtime import OnnxCurves
    from predictor import estimator_kind
    from predictor.bert_curves import BertCurves
    from predictor.curves import BERT_CURVES, META_FILE

    source, out = Path(source), Path(out)
    if estimator_kind(source) != BERT_CURVES:
        raise InputError(f"{source / META_FILE}: not a BERT curve estimator (tale train-curves --estimator bert)")
    _prepare(source, out)
    curves = BertCurves.load(source, device="cpu")
    names = list(curves.meta["input_names"])
    precisions = _write_graph(curves.model, curves.encode, names, "logits", out, config)
    manifest = CurvesManifest(
        head=curves.head, max_length=curves.max_length, input_names=tuple(names), output_name="logits",
        source_fingerprint=curves.training_fingerprint, models={p: _exported(out, MODEL_FILES[p]) for p in precisions},
        opset=config.opset, source=str(source), encoder=curves.meta["encoder"], export_config=as_json(config),
        versions=_versions(), **_write_tokenizer(curves.tokenizer, curves.max_length, out),
    )
    return _checked_save(manifest, curves, out, precisions, config, OnnxCurves.load)
