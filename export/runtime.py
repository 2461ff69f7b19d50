"""The budget regressor on onnxruntime: questions in, budgets out, without torch or transformers.

``OnnxEstimator.load(directory)`` reads an export directory (``export/__init__.py`` shows the
layout), checks the sha256 of the graph and the tokenizer against ``tale_onnx.json`` and opens an
onnxruntime session. It tokenizes with ``tokenizers`` exactly as the regressor's transformers
tokenizer does (same ``tokenizer.json``, truncation at ``max_length``, padding to the batch's
longest question) and feeds the graph the regressor's input names, so its outputs match
``BertRegressor.raw_outputs`` (``tests/test_export.py`` holds it to 1e-4).

Imports: onnxruntime, tokenizers, numpy and the torch-free ``predictor``, ``predictor.calibrate`` and
``predictor.target``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from export.manifest import MANIFEST_FILE, ExportedFile, ExportManifest, RuntimeConfig
from predictor import BudgetRange
from predictor.calibrate import Calibration
from predictor.target import length_batches
from reasoner.errors import InputError, MissingInputError, TaleError

__all__ = ["CorruptExportError", "OnnxEstimator", "RuntimeConfig"]

logger = logging.getLogger(__name__)


class CorruptExportError(TaleError, ValueError):
    """A file of an export directory does not have the sha256 that ``tale_onnx.json`` records."""


def read_verified(directory: Path, entry: ExportedFile) -> bytes:
    """The bytes of ``entry``, once their sha256 matches the manifest's."""
    path = Path(directory) / entry.file
    if not path.is_file():
        raise MissingInputError(f"{path}: file missing from the ONNX export (listed in {MANIFEST_FILE})")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise CorruptExportError(
            f"{path}: sha256 {digest} does not match {entry.sha256} recorded in {MANIFEST_FILE}; "
            "the file is corrupt or was changed after export: export the regressor again"
        )
    return data


def cpu_session(model: bytes | str, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``model`` (its bytes or a path) with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graph is one chain of ops; parallelism is inside each op
    options.log_severity_level = 3  # errors only: not the per-session shape-inference notes
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _tokenizer(data: bytes, manifest: ExportManifest) -> Tokenizer:
    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    tokenizer.enable_truncation(manifest.max_length, direction=manifest.truncation_side)
    tokenizer.enable_padding(direction=manifest.padding_side, pad_id=manifest.pad_id, pad_token=manifest.pad_token)
    return tokenizer


class OnnxEstimator:
    """Satisfies ``predictor.Estimator`` with an exported regressor on onnxruntime."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, manifest: ExportManifest,
                 precision: str, batch_size: int = RuntimeConfig.batch_size,
                 calibration: Calibration | None = None) -> None:
        self.calibration = calibration  # the regressor's, pinned in the manifest; None if never calibrated
        self.session = session
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.precision = precision
        self.batch_size = batch_size

    @classmethod
    def load(cls, directory: Path, config: RuntimeConfig = RuntimeConfig()) -> OnnxEstimator:
        directory = Path(directory)
        manifest = ExportManifest.load(directory)
        precision = config.precision or ("int8" if "int8" in manifest.models else "fp32")
        if precision not in manifest.models:
            raise InputError(f"{directory} holds no {precision} model (it has {sorted(manifest.models)}); "
                             "export again with int8 quantization")
        model = read_verified(directory, manifest.models[precision])
        tokenizer = _tokenizer(read_verified(directory, manifest.tokenizer), manifest)
        session = cpu_session(model, config.threads)
        names = [i.name for i in session.get_inputs()]
        if names != list(manifest.input_names):
            raise InputError(f"{directory / manifest.models[precision].file}: graph inputs {names}, "
                             f"{MANIFEST_FILE} lists {list(manifest.input_names)}")
        calibration = None
        if manifest.calibration is not None:
            raw = read_verified(directory, manifest.calibration)
            calibration = Calibration.from_json(json.loads(raw), str(directory / manifest.calibration.file))
        logger.info("loaded %s (%s, %d threads)", directory, precision, config.threads)
        return cls(session, tokenizer, manifest, precision, batch_size=config.batch_size, calibration=calibration)

    @property
    def training_fingerprint(self) -> str:
        """The source regressor's ``training_fingerprint``."""
        return self.manifest.source_fingerprint

    def encode(self, questions: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph's inputs for ``questions`` (int64, [batch, longest]), as ``BertRegressor.encode``."""
        encodings = self.tokenizer.encode_batch(list(questions))
        columns = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                   "token_type_ids": [e.type_ids for e in encodings]}
        return {name: np.asarray(columns[name], dtype=np.int64) for name in self.manifest.input_names}

    def raw_outputs(self, questions: Sequence[str]) -> list[float]:
        """The graph's output per question: the standardized log budget, before any transform.

        Batched by length, ``batch_size`` at a time, in the same order as ``BertRegressor.raw_outputs``.
        """
        outputs = [0.0] * len(questions)
        for chunk in length_batches(questions, self.batch_size):
            (logits,) = self.session.run([self.manifest.output_name], self.encode([questions[i] for i in chunk]))
            for i, value in zip(chunk, logits[:, 0].tolist()):
                outputs[i] = value
        return outputs

    @property
    def budget_range(self) -> BudgetRange:
        return self.manifest.budget_range

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        """Budgets in tokens before rounding and clamping."""
        return [self.manifest.target.decode(o) for o in self.raw_outputs(questions)]

    def predict(self, questions: Sequence[str]) -> list[int]:
        return self.manifest.budgets(self.raw_outputs(questions))
