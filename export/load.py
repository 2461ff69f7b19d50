"""Which kind of estimator directory this is, and loading any of them: the one place that decides (an ONNX export by
its manifest, anything else by its meta file, ``predictor.estimator_kind``). Imports lazily: a TF-IDF linear export
loads with the standard library alone, an ONNX export without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.manifest import CURVES_FORMAT, MANIFEST_FILE, RuntimeConfig, export_format
from predictor.curves import BERT_CURVES
from reasoner.errors import ConfigError, InputError

ONNX = "onnx"
ONNX_CURVES = "onnx-curves"


def directory_kind(directory: Path) -> str | None:
    """``onnx`` for an ONNX export of the regressor, ``onnx-curves`` for one of the BERT curve estimator, else the saved
    estimator's kind (``bert-regressor``, ``tfidf-ridge``, ``tfidf-linear``, ``constant``, ``reasoner-probe``,
    ``curves-*``); None for a directory that is neither."""
    from predictor import estimator_kind

    found = export_format(directory)
    if found is None:
        return estimator_kind(directory)
    return ONNX_CURVES if found == CURVES_FORMAT else ONNX


def load_any(directory: Path, config: RuntimeConfig = RuntimeConfig()) -> Any:
    """The estimator saved in ``directory``: an ONNX export on onnxruntime (run with ``config``), or any saved
    estimator (``predictor.load_estimator``)."""
    kind = directory_kind(directory)
    if kind == ONNX_CURVES or (kind or "").startswith("curves-"):
        raise InputError(f"{directory} holds a curve estimator, not a budget estimator: use it through a policy "
                         f"(price=LAMBDA:{directory}, target=SHARE:{directory} or total=TOKENS:{directory})")
    if kind == ONNX:
        from export.runtime import OnnxEstimator

        return OnnxEstimator.load(directory, config)
    if config.precision is not None:
        raise ConfigError(f"--precision applies to an ONNX export; {directory} has no {MANIFEST_FILE}")
    from predictor import load_estimator

    return load_estimator(directory)


def load_curves_any(directory: Path, config: RuntimeConfig = RuntimeConfig()) -> Any:
    """The curve estimator saved in ``directory``: an ONNX export of the BERT one on onnxruntime (torch-free), or any
    saved curve estimator (``predictor.curves.load_curves``)."""
    kind = directory_kind(directory)
    if kind == ONNX_CURVES:
        from export.runtime import OnnxCurves

        return OnnxCurves.load(directory, config)
    if kind == BERT_CURVES:
        from predictor.bert_curves import BertCurves

        return BertCurves.load(directory)
    from predictor.curves import load_curves

    return load_curves(directory)
