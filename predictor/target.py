"""What a saved regressor predicts and how its output becomes a budget, without torch.

The BERT regressor learns the standardized log budget, ``z = (ln(budget) - mean) / std``; a
prediction is ``exp(z * std + mean)``, rounded and clamped into the budget range. The numbers and
the model's input contract live in ``tale_predictor.json`` (``RegressorMeta``), so the torch-free
ONNX runtime (``export``) can read them and apply the same ``LogTarget`` and ``BudgetRange``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from predictor import META_FILE, BudgetRange
from reasoner.errors import ConfigError, InputError, MissingInputError

# What the regressor's forward pass takes, in this order, and the output it returns (shape
# [batch, 1]). token_type_ids is never fed: questions are single segments, for which BERT's
# default (all zeros) is the same, and encoders without segment embeddings need no special case.
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
FORMAT_VERSION = 1
_MAX_EXP = 700.0  # math.exp overflows a float a little above 709


@dataclass(frozen=True)
class LogTarget:
    """The standardized natural-log budget a regressor is trained on."""

    mean: float  # of ln(budget) over the training examples
    std: float  # of ln(budget) (population); 1.0 when every training budget is the same

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ConfigError(f"log target needs a finite mean and a positive std, got {self.mean}, {self.std}")

    @classmethod
    def fit(cls, budgets: Iterable[int]) -> LogTarget:
        logs = [math.log(b) for b in budgets]
        if not logs:
            raise ValueError("cannot fit a log target to no budgets")
        std = statistics.pstdev(logs)
        return cls(statistics.fmean(logs), std if std > 1e-12 else 1.0)

    def encode(self, budget: float) -> float:
        return (math.log(budget) - self.mean) / self.std

    def decode(self, output: float) -> float:
        """The budget in tokens, before rounding and clamping (inf when it overflows)."""
        value = output * self.std + self.mean
        return math.exp(value) if value < _MAX_EXP else math.inf


@dataclass(frozen=True)
class RegressorMeta:
    """``tale_predictor.json`` of a saved BERT regressor: enough to use it, trace it and rerun it."""

    target: LogTarget
    budget_range: BudgetRange
    max_length: int  # questions are truncated to this many tokens, special tokens included
    encoder: str  # the encoder as given ("default", a local path or a hub id)
    encoder_source: str  # what it resolved to (the packaged directory for "default")
    training_fingerprint: str  # predictor.data.fingerprint of every example given to fit
    n_train: int  # examples trained on
    n_validation: int  # examples held for early stopping (0: no early stopping)
    seed: int
    epochs_trained: float = 0.0  # may stop early, or mid-epoch with max_steps
    best_validation_loss: float | None = None  # MSE on the standardized target; None without validation
    training_config: dict[str, Any] = field(default_factory=dict)  # the BertRegressorConfig, as JSON
    data: dict[str, Any] = field(default_factory=dict)  # where the examples came from (train_regressor)
    versions: dict[str, str] = field(default_factory=dict)  # torch and transformers that trained it
    input_names: tuple[str, ...] = INPUT_NAMES
    output_name: str = OUTPUT_NAME

    def budgets(self, outputs: Iterable[float]) -> list[int]:
        """Model outputs (standardized log budgets) to clamped integer budgets."""
        return to_budgets(outputs, self.target, self.budget_range)

    def to_json(self) -> dict[str, Any]:
        return {
            "estimator": "bert-regressor",
            "format_version": FORMAT_VERSION,
            "target_transform": "log",
            "mean": self.target.mean,
            "std": self.target.std,
            "clamp_min": self.budget_range.min,
            "clamp_max": self.budget_range.max,
            "max_length": self.max_length,
            "input_names": list(self.input_names),
            "output_name": self.output_name,
            "encoder": self.encoder,
            "encoder_source": self.encoder_source,
            "training_fingerprint": self.training_fingerprint,
            "n_train": self.n_train,
            "n_validation": self.n_validation,
            "seed": self.seed,
            "epochs_trained": self.epochs_trained,
            "best_validation_loss": self.best_validation_loss,
            "training_config": self.training_config,
            "data": self.data,
            "versions": self.versions,
        }

    def save(self, directory: Path) -> None:
        (directory / META_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> RegressorMeta:
        path = Path(directory) / META_FILE
        if not path.is_file():
            raise MissingInputError(f"{directory} is not a saved BERT regressor: no {META_FILE}")
        raw = json.loads(path.read_text())
        if raw.get("estimator") != "bert-regressor" or raw.get("target_transform") != "log":
            raise InputError(f"{path}: not a log-target BERT regressor ({raw.get('estimator')!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{path}: format_version {raw.get('format_version')!r}, this code reads {FORMAT_VERSION}")
        return cls(
            target=LogTarget(raw["mean"], raw["std"]),
            budget_range=BudgetRange(raw["clamp_min"], raw["clamp_max"]),
            max_length=raw["max_length"],
            encoder=raw["encoder"],
            encoder_source=raw["encoder_source"],
            training_fingerprint=raw["training_fingerprint"],
            n_train=raw["n_train"],
            n_validation=raw["n_validation"],
            seed=raw["seed"],
            epochs_trained=raw.get("epochs_trained", 0.0),
            best_validation_loss=raw.get("best_validation_loss"),
            training_config=raw.get("training_config", {}),
            data=raw.get("data", {}),
            versions=raw.get("versions", {}),
            input_names=tuple(raw["input_names"]),
            output_name=raw["output_name"],
        )


def as_json(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON values (paths and tuples become strings and lists)."""
    return json.loads(json.dumps(asdict(config), default=str))


def to_budgets(outputs: Iterable[float], target: LogTarget, budget_range: BudgetRange) -> list[int]:
    """Regressor outputs (standardized log budgets) to clamped integer budgets: the one decoding
    shared by the torch regressor and its ONNX export."""
    return [budget_range.clamp(target.decode(float(o))) for o in outputs]


def length_batches(texts: Sequence[str], size: int) -> Iterator[list[int]]:
    """Indices of ``texts`` in batches of ``size``, shortest first, so padding stays short.
    The torch regressor and its ONNX export batch alike, so their outputs compare row for row."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]
