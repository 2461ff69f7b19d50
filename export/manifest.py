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
        if not self.models.keys() <= set(PRECISIONS) or "fp32" not in self.models:
            raise ConfigError(f"models must include fp32 and only {PRECISIONS}, got {sorted(self.models)}")
        for side in (self.padding_side, self.truncation_side):
            if side not in ("right", "left"):
                raise ConfigError(f"padding and truncation sides must be right or left, got {side!r}")

    def budgets(self, outputs: list[float]) -> list[int]:
        """Graph outputs (standardized log budgets) to clamped integer budgets, as ``RegressorMeta.budgets``."""
        return to_budgets(outputs, self.target, self.budget_range)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "target_transform": "log",
            "mean": self.target.mean,
            "std": self.target.std,
            "clamp_min": self.budget_range.min,
            "clamp_max": self.budget_range.max,
            "max_length": self.max_length,
            "input_names": list(self.input_names),
            "output_name": self.output_name,
            "pad_id": self.pad_id,
            "pad_token": self.pad_token,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "source_fingerprint": self.source_fingerprint,
            "models": {p: {"precision": p, **asdict(f)} for p, f in self.models.items()},
            "tokenizer": asdict(self.tokenizer),
            "calibration": None if self.calibration is None else asdict(self.calibration),
            "opset": self.opset,
            "source": self.source,
            "encoder": self.encoder,
            "export_config": self.export_config,
            "check": self.check,
            "versions": self.versions,
        }

    def save(self, directory: Path) -> None:
        (Path(directory) / MANIFEST_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ExportManifest:
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            raise MissingInputError(f"{directory} is not an ONNX export: no {MANIFEST_FILE}")
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT or raw.get("target_transform") != "log":
            raise InputError(f"{path}: not a log-target ONNX regressor export ({raw.get('format')!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{path}: format_version {raw.get('format_version')!r}, this code reads {FORMAT_VERSION}")

        def exported(entry: dict[str, Any]) -> ExportedFile:
            return ExportedFile(entry["file"], entry["sha256"], entry["bytes"])

        return cls(
            target=LogTarget(raw["mean"], raw["std"]),
            budget_range=BudgetRange(raw["clamp_min"], raw["clamp_max"]),
            max_length=raw["max_length"],
            input_names=tuple(raw["input_names"]),
            output_name=raw["output_name"],
            pad_id=raw["pad_id"],
            pad_token=raw["pad_token"],
            padding_side=raw["padding_side"],
            truncation_side=raw["truncation_side"],
            source_fingerprint=raw["source_fingerprint"],
            models={p: exported(entry) for p, entry in raw["models"].items()},
            tokenizer=exported(raw["tokenizer"]),
            calibration=exported(raw["calibration"]) if raw.get("calibration") else None,
            opset=raw["opset"],
            source=raw.get("source", ""),
            encoder=raw.get("encoder", ""),
            export_config=raw.get("export_config", {}),
            check=raw.get("check", {}),
            versions=raw.get("versions", {}),
        )


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
