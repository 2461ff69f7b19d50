"""What an export directory holds (``tale_onnx.json``) and how the runtime runs it; standard library only.

The manifest repeats what ``tale_predictor.json`` says about the output (log target, clamp, max
length, input names) because the export directory must stand alone: the runtime never reads the
source regressor. It adds what the torch-free tokenizer needs (padding and truncation) and the
sha256 of every file, checked on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from predictor import BudgetRange
from predictor.target import LogTarget, to_budgets
from reasoner.errors import ConfigError, InputError, MissingInputError

MANIFEST_FILE = "tale_onnx.json"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}  # by precision
PRECISIONS = tuple(MODEL_FILES)
FORMAT = "tale-onnx-regressor"
FORMAT_VERSION = 1
CURVES_FORMAT = "tale-onnx-curves"  # a BERT curve estimator (predictor.bert_curves): 2 outputs per rung
CURVES_FORMAT_VERSION = 1
# What every export holds besides its head, under the same JSON keys (tuples are written as lists).
GRAPH_FIELDS = ("max_length", "input_names", "output_name", "pad_id", "pad_token", "padding_side", "truncation_side",
                "source_fingerprint", "opset", "source", "encoder", "export_config", "check", "versions")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class ExportedFile:
    """One file of the export directory, as written."""

    file: str  # name inside the export directory
    sha256: str  # hex digest of its bytes
    bytes: int  # size


@dataclass(frozen=True)
class ExportManifest:
    """``tale_onnx.json``: enough to turn questions into budgets with the ONNX graph, and to trace it."""

    target: LogTarget
    budget_range: BudgetRange
    max_length: int  # tokens per question, special tokens included; longer ones are truncated
    input_names: tuple[str, ...]  # fed to the graph, in this order
    output_name: str  # [batch, 1] standardized log budget
    pad_id: int
    pad_token: str
    padding_side: str  # "right" or "left", as the regressor's tokenizer pads
    truncation_side: str  # "right" or "left"
    source_fingerprint: str  # the regressor's training_fingerprint
    models: dict[str, ExportedFile]  # by precision: "fp32" always, "int8" when quantized
    tokenizer: ExportedFile
    opset: int
    calibration: ExportedFile | None = None  # tale_calibration.json, where the regressor was calibrated
    source: str = ""  # the regressor directory exported, as given
    encoder: str = ""  # the regressor's encoder, as it was given to fit
    export_config: dict[str, Any] = field(default_factory=dict)  # the ExportConfig, as JSON
    check: dict[str, float] = field(default_factory=dict)  # ORT against torch on probe questions, at export
    versions: dict[str, str] = field(default_factory=dict)  # torch, transformers, onnx, onnxruntime

    def __post_init__(self) -> None:
        check_graph(self)

    def budgets(self, outputs: list[float]) -> list[int]:
        """Graph outputs (standardized log budgets) to clamped integer budgets, as ``RegressorMeta.budgets``."""
        return to_budgets(outputs, self.target, self.budget_range)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "target_transform": "log", "mean": self.target.mean,
                "std": self.target.std, "clamp_min": self.budget_range.min, "clamp_max": self.budget_range.max,
                **graph_json(self), "calibration": None if self.calibration is None else asdict(self.calibration)}

    def save(self, directory: Path) -> None:
        (Path(directory) / MANIFEST_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ExportManifest:
        raw = read_manifest(directory, {FORMAT: FORMAT_VERSION})
        if raw.get("target_transform") != "log":
            raise InputError(f"{Path(directory) / MANIFEST_FILE}: not a log-target ONNX regressor export")
        return cls(target=LogTarget(raw["mean"], raw["std"]), budget_range=BudgetRange(raw["clamp_min"], raw["clamp_max"]),
                   calibration=_exported(raw["calibration"]) if raw.get("calibration") else None, **graph_fields(raw))


def check_graph(manifest: Any) -> None:
    """Refuse a manifest without an fp32 model, with an unknown precision, or with an unknown padding side."""
    if not manifest.models.keys() <= set(PRECISIONS) or "fp32" not in manifest.models:
        raise ConfigError(f"models must include fp32 and only {PRECISIONS}, got {sorted(manifest.models)}")
    for side in (manifest.padding_side, manifest.truncation_side):
        if side not in ("right", "left"):
            raise ConfigError(f"padding and truncation sides must be right or left, got {side!r}")


def _exported(entry: dict[str, Any]) -> ExportedFile:
    return ExportedFile(entry["file"], entry["sha256"], entry["bytes"])


def graph_json(manifest: Any) -> dict[str, Any]:
    """The ``GRAPH_FIELDS``, models and tokenizer of a manifest, as JSON."""
    data = {name: list(v) if isinstance(v := getattr(manifest, name), tuple) else v for name in GRAPH_FIELDS}
    return {**data, "models": {p: {"precision": p, **asdict(f)} for p, f in manifest.models.items()},
            "tokenizer": asdict(manifest.tokenizer)}


def graph_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """``graph_json`` read back: the keyword arguments of the manifest classes' shared fields."""
    fields = {name: raw[name] for name in GRAPH_FIELDS if name in raw}
    return {**fields, "input_names": tuple(raw["input_names"]), "models": {p: _exported(e) for p, e in raw["models"].items()},
            "tokenizer": _exported(raw["tokenizer"])}


def read_manifest(directory: Path, formats: dict[str, int]) -> dict[str, Any]:
    """The raw ``tale_onnx.json`` of an export directory, refused unless its format is one of ``formats`` (format ->
    the version this code reads)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise MissingInputError(f"{directory} is not an ONNX export: no {MANIFEST_FILE}")
    raw = json.loads(path.read_text())
    name = raw.get("format")
    if name not in formats:
        raise InputError(f"{path}: a {name!r} export, not {' or '.join(map(repr, formats))}")
    if raw.get("format_version") != formats[name]:
        raise InputError(f"{path}: format_version {raw.get('format_version')!r}, this code reads {formats[name]}")
    return raw


def export_format(directory: Path) -> str | None:
    """The ``format`` of an export directory's manifest; None without one."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("format")
    except (json.JSONDecodeError, AttributeError):
        raise InputError(f"{path}: not a JSON object") from None


@dataclass(frozen=True)
class CurvesManifest:
    """``tale_onnx.json`` of an exported BERT curve estimator: the graph's 2R outputs per question decode with ``head``."""

    head: Any  # predictor.curves.CurveHead
    max_length: int
    input_names: tuple[str, ...]
    output_name: str  # [batch, 2R]
    pad_id: int
    pad_token: str
    padding_side: str
    truncation_side: str
    source_fingerprint: str  # the estimator's training_fingerprint
    models: dict[str, ExportedFile]
    tokenizer: ExportedFile
    opset: int
    source: str = ""
    encoder: str = ""
    export_config: dict[str, Any] = field(default_factory=dict)
    check: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_graph(self)

    def to_json(self) -> dict[str, Any]:
        return {"format": CURVES_FORMAT, "format_version": CURVES_FORMAT_VERSION, "head": self.head.to_json(), **graph_json(self)}

    def save(self, directory: Path) -> None:
        (Path(directory) / MANIFEST_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> CurvesManifest:
        from predictor.curves import CurveHead

        raw = read_manifest(directory, {CURVES_FORMAT: CURVES_FORMAT_VERSION})
        return cls(head=CurveHead.from_json(raw["head"]), **graph_fields(raw))


def attach_calibration(directory: Path, calibration: Any) -> ExportManifest:
    """Save ``calibration`` (a ``predictor.calibrate.Calibration``) into an export directory and pin
    its sha256 in the manifest, as the export pins its graph."""
    from predictor.calibrate import CALIBRATION_FILE

    manifest = ExportManifest.load(directory)
    path = calibration.save(directory)
    pinned = ExportedFile(CALIBRATION_FILE, sha256(path), path.stat().st_size)
    manifest = replace(manifest, calibration=pinned)
    manifest.save(directory)
    return manifest


@dataclass(frozen=True)
class RuntimeConfig:
    """How ``export.runtime.OnnxEstimator`` runs an export directory."""

    precision: str | None = None  # "fp32" or "int8"; None: int8 when the export has it, else fp32
    threads: int = 0  # onnxruntime intra-op threads; 0: onnxruntime's choice (one per physical core)
    batch_size: int = 64  # questions per graph run; questions are batched by length to keep padding short

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS} or None, got {self.precision!r}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0: onnxruntime's choice), got {self.threads}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
