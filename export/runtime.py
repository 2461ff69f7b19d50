"""The budget regressor on onnxruntime: questions in, budgets out, without torch or transformers.

``OnnxEstimator.load(directory)`` reads an export directory (``export/__init__.py`` shows the
layout), checks the sha256 of the graph and the tokenizer against ``tale_onnx.json`` and opens an
onnxruntime session. It tokenizes with ``tokenizers`` exactly as the regressor's transformers
tokenizer does (same ``tokenizer.json``, truncation at ``max_length``, padding to the batch's
longest question) and feeds the graph the regressor's input names, so its outputs match
``BertRegressor.raw_outputs`` (``tests/test_export.py`` holds it to 1e-4). ``OnnxCurves`` does the same for an
exported BERT curve estimator (``predictor.bert_curves``), decoding its outputs with ``predictor.curves.CurveHead``.

Imports: onnxruntime, tokenizers, numpy and the torch-free ``predictor``, ``predictor.calibrate``,
``predictor.curves`` and ``predictor.target``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from export.manifest import MANIFEST_FILE, CurvesManifest, ExportedFile, ExportManifest, RuntimeConfig
from predictor import BudgetRange
from predictor.calibrate import Calibration
from predictor.curves import Curve
from predictor.target import length_batches
from reasoner.errors import InputError, MissingInputError, TaleError

__all__ = ["CorruptExportError", "OnnxCurves", "OnnxEstimator", "RuntimeConfig"]

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


class OnnxGraph:
    """An export's graph on onnxruntime and its torch-free tokenizer: questions in, the graph's output rows out.
    ``OnnxEstimator`` (the regressor) and ``OnnxCurves`` (the curve estimator) read their own heads from it."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, manifest: ExportManifest | CurvesManifest,
                 precision: str, batch_size: int = RuntimeConfig.batch_size) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.precision = precision
        self.batch_size = batch_size

    @staticmethod
    def open(directory: Path, manifest: ExportManifest | CurvesManifest, config: RuntimeConfig) -> tuple[ort.InferenceSession, Tokenizer, str]:
        """(session, tokenizer, precision) of an export directory, every file's sha256 checked against ``manifest``."""
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
        logger.info("loaded %s (%s, %d threads)", directory, precision, config.threads)
        return session, tokenizer, precision

    @property
    def training_fingerprint(self) -> str:
        """The source estimator's ``training_fingerprint``."""
        return self.manifest.source_fingerprint

    def encode(self, questions: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph's inputs for ``questions`` (int64, [batch, longest]), as the torch estimator's ``encode``."""
        encodings = self.tokenizer.encode_batch(list(questions))
        columns = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                   "token_type_ids": [e.type_ids for e in encodings]}
        return {name: np.asarray(columns[name], dtype=np.int64) for name in self.manifest.input_names}

    def rows(self, questions: Sequence[str]) -> list[list[float]]:
        """The graph's output row per question, batched by length ``batch_size`` at a time, in the questions' order."""
        outputs: list[list[float]] = [[] for _ in questions]
        for chunk in length_batches(questions, self.batch_size):
            (logits,) = self.session.run([self.manifest.output_name], self.encode([questions[i] for i in chunk]))
            for i, row in zip(chunk, logits.tolist()):
                outputs[i] = row
        return outputs


class OnnxEstimator(OnnxGraph):
    """Satisfies ``predictor.Estimator`` with an exported regressor on onnxruntime."""

    manifest: ExportManifest

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, manifest: ExportManifest,
                 precision: str, batch_size: int = RuntimeConfig.batch_size,
                 calibration: Calibration | None = None) -> None:
        super().__init__(session, tokenizer, manifest, precision, batch_size)
        self.calibration = calibration  # the regressor's, pinned in the manifest; None if never calibrated

    @classmethod
    def load(cls, directory: Path, config: RuntimeConfig = RuntimeConfig()) -> OnnxEstimator:
        directory = Path(directory)
        manifest = ExportManifest.load(directory)
        session, tokenizer, precision = cls.open(directory, manifest, config)
        calibration = None
        if manifest.calibration is not None:
            raw = read_verified(directory, manifest.calibration)
            calibration = Calibration.from_json(json.loads(raw), str(directory / manifest.calibration.file))
        return cls(session, tokenizer, manifest, precision, batch_size=config.batch_size, calibration=calibration)

    def raw_outputs(self, questions: Sequence[str]) -> list[float]:
        """The graph's output per question: the standardized log budget, before any transform (as
        ``BertRegressor.raw_outputs``)."""
        return [row[0] for row in self.rows(questions)]

    @property
    def budget_range(self) -> BudgetRange:
        return self.manifest.budget_range

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        """Budgets in tokens before rounding and clamping."""
        return [self.manifest.target.decode(o) for o in self.raw_outputs(questions)]

    def predict(self, questions: Sequence[str]) -> list[int]:
        return self.manifest.budgets(self.raw_outputs(questions))


class OnnxCurves(OnnxGraph):
    """Satisfies ``predictor.curves.CurveEstimator`` with an exported BERT curve estimator on onnxruntime."""

    manifest: CurvesManifest

    @classmethod
    def load(cls, directory: Path, config: RuntimeConfig = RuntimeConfig()) -> OnnxCurves:
        directory = Path(directory)
        manifest = CurvesManifest.load(directory)
        session, tokenizer, precision = cls.open(directory, manifest, config)
        return cls(session, tokenizer, manifest, precision, batch_size=config.batch_size)

    @property
    def rungs(self) -> tuple[Any, ...]:
        return self.manifest.head.rungs

    def raw_outputs(self, questions: Sequence[str]) -> list[list[float]]:
        """The 2R outputs per question, before decoding (as ``BertCurves.raw_outputs``)."""
        return self.rows(questions)

    def curves(self, questions: Sequence[str]) -> list[Curve]:
        return self.manifest.head.decode(self.rows(list(questions))) if questions else []
