"""Which kind of estimator directory this is, and loading any of them: the one place that decides (an ONNX export by
its manifest, anything else by its meta file, ``predictor.estimator_kind``). Imports lazily: a TF-IDF linear export
loads with the standard library alone, an ONNX export without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.manifest import MANIFEST_FILE, RuntimeConfig
from reasoner.errors import ConfigError

ONNX = "onnx"


def directory_kind(directory: Path) -> str | None:
    """``onnx`` for an ONNX export, else the saved estimator's kind (``bert-regressor``, ``tfidf-ridge``, ``tfidf-linear``,
    ``constant``, ``reasoner-probe``, ``curves-*``); None for a directory that is neither."""
    from predictor import estimator_kind

    return ONNX if (Path(directory) / MANIFEST_FILE).is_file() else estimator_kind(directory)


def load_any(directory: Path, config: RuntimeConfig = RuntimeConfig()) -> Any:
    """The estimator saved in ``directory``: an ONNX export on onnxruntime (run with ``config``), or any saved
    estimator (``predictor.load_estimator``)."""
    if directory_kind(directory) == ONNX:
        from export.runtime import OnnxEstimator

        return OnnxEstimator.load(directory, config)
    if config.precision is not None:
        raise ConfigError(f"--precision applies to an ONNX export; {directory} has no {MANIFEST_FILE}")
    from predictor import load_estimator

    return load_estimator(directory)
