"""Calibrated budgets: choose a risk alpha, get budgets that suffice for 1 - alpha of new questions.

Split-conformal calibration of any estimator with unrounded budgets e (BERT, ONNX, TF-IDF, constant).
On a calibration split of feasible records, disjoint by problem id from the estimator's training
split, each record scores s_i = log(b*_i / e_i), b*_i its searched budget. For a risk alpha, with the
n scores sorted, q is the k-th smallest for k = ceil((n + 1)(1 - alpha)), and the calibrated budget
of a new question is e * exp(q).

Guarantee (split conformal prediction, finite-sample): for a new question exchangeable with the
calibration ones, P(b* <= e * exp(q)) >= 1 - alpha. It needs k <= n, that is n >= (1 - alpha) / alpha
calibration records (9 for alpha 0.1, 19 for 0.05); with fewer the calibration is refused. The
budget range's clamp (at most 1024 tokens by default) can cut a calibrated budget; a clamped budget
keeps the guarantee only where b* is below the clamp too.

The sorted scores are saved (``tale_calibration.json``), so any alpha can be chosen at inference.
Standard library only: the torch-free ONNX runtime applies a calibration exactly as torch does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predictor import BudgetRange, Estimator, Scaled
from reasoner.errors import ConfigError, InputError, MissingInputError, TaleError

CALIBRATION_FILE = "tale_calibration.json"
FORMAT = "tale-calibration"
FORMAT_VERSION = 1
REPORTED_ALPHAS = (0.5, 0.2, 0.1, 0.05)


class TooFewRecordsError(TaleError, ValueError):
    """A calibration split too small for the risk asked."""


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"a risk alpha must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def rank(n: int, alpha: float) -> int:
    """k = ceil((n + 1)(1 - alpha)), the rank of the conformal quantile among n sorted scores.

    Rounded to 9 decimals before the ceiling, so that binary floating point (0.1 is not exact) does
    not push an exact integer such as (9 + 1) * 0.9 one above."""
    return math.ceil(round((n + 1) * (1 - check_alpha(alpha)), 9))


def records_needed(alpha: float) -> int:
    """The fewest calibration records for which ``rank(n, alpha) <= n``."""
    n = 1
    while rank(n, alpha) > n:
        n += 1
    return n


@dataclass(frozen=True)
class Calibration:
    """The sorted conformal scores of one estimator on one calibration split."""

    scores: tuple[float, ...]  # log(b* / e), ascending
    estimator: str = ""  # what was calibrated, as named on the command line
    source_fingerprint: str = ""  # the estimator's training_fingerprint, to catch a retrained one
    calibration_fingerprint: str = ""  # predictor.data.fingerprint of the calibration examples

    def __post_init__(self) -> None:
        if not self.scores:
            raise TooFewRecordsError("a calibration needs at least one feasible record")
        if any(not math.isfinite(s) for s in self.scores):
            raise ConfigError("calibration scores must be finite numbers")
        if list(self.scores) != sorted(self.scores):
            object.__setattr__(self, "scores", tuple(sorted(self.scores)))

    @classmethod
    def from_estimates(cls, estimates: Sequence[float], budgets: Sequence[int], **fields: str) -> Calibration:
        """The scores log(b* / e) of unrounded ``estimates`` against the searched ``budgets``."""
        if len(estimates) != len(budgets):
            raise ValueError(f"{len(estimates)} estimates but {len(budgets)} budgets")
        if bad := [e for e in estimates if not (math.isfinite(e) and e > 0)]:
            raise ValueError(f"the estimator gave {len(bad)} budgets that are not positive numbers (first: {bad[0]})")
        return cls(tuple(math.log(b / e) for b, e in zip(budgets, estimates)), **fields)

    @property
    def n(self) -> int:
        return len(self.scores)

    def quantile(self, alpha: float) -> float:
        """q: the ``rank(n, alpha)``-th smallest score; refused when alpha needs more records."""
        k = rank(self.n, alpha)
        if k > self.n:
            raise TooFewRecordsError(
                f"risk {alpha:g} needs at least {records_needed(alpha)} calibration records, this calibration has "
                f"{self.n}; calibrate on more feasible records or choose a larger risk")
        return self.scores[k - 1]

    def factor(self, alpha: float) -> float:
        """exp(q): what the estimator's budgets are multiplied by at risk ``alpha``."""
        return math.exp(self.quantile(alpha))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "n": self.n, "estimator": self.estimator,
                "source_fingerprint": self.source_fingerprint, "calibration_fingerprint": self.calibration_fingerprint,
                "factors": {str(a): round(self.factor(a), 6) for a in REPORTED_ALPHAS if rank(self.n, a) <= self.n},
                "scores": list(self.scores)}

    def save(self, directory: Path) -> Path:
        path = Path(directory) / CALIBRATION_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Calibration:
        """From ``to_json``'s dict; ``where`` (a file name) starts every error message."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InputError(f"{where}: not a TALE calibration (field 'format' must be {FORMAT!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{where}: field 'format_version' is {raw.get('format_version')!r}, "
                             f"this code reads {FORMAT_VERSION}")
        scores = raw.get("scores")
        if not isinstance(scores, list) or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
            raise InputError(f"{where}: field 'scores' must be a list of numbers")
        try:
            return cls(tuple(float(s) for s in scores), str(raw.get("estimator", "")),
                       str(raw.get("source_fingerprint", "")), str(raw.get("calibration_fingerprint", "")))
        except ValueError as error:
            raise InputError(f"{where}: field 'scores': {error}") from None

    @classmethod
    def load(cls, directory: Path) -> Calibration:
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            raise MissingInputError(f"{directory} holds no calibration ({CALIBRATION_FILE}); "
                                    f"run `tale calibrate --predictor {directory} --records RECORDS_DIR`")
        try:
            raw = json.loads(path.read_text())
        except ValueError as error:
            raise InputError(f"{path}: not JSON ({error})") from None
        return cls.from_json(raw, str(path))


def fit(estimator: Estimator, questions: Sequence[str], budgets: Sequence[int], *, name: str = "",
        calibration_fingerprint: str = "") -> Calibration:
    """The calibration of ``estimator`` on feasible records: their questions and searched budgets."""
    if len(questions) != len(budgets):
        raise ValueError(f"{len(questions)} questions but {len(budgets)} budgets")
    if not questions:
        raise TooFewRecordsError("a calibration needs at least one feasible record")
    return Calibration.from_estimates(
        [float(b) for b in estimator.predict_float(list(questions))], budgets, estimator=name,
        source_fingerprint=str(getattr(estimator, "training_fingerprint", "") or ""),
        calibration_fingerprint=calibration_fingerprint)


def calibration_for(estimator: Estimator, directory: Path) -> Calibration:
    """The calibration that goes with a loaded estimator: its own where it carries one (an ONNX export
    reads its file checked against the manifest's pin, and a never-calibrated export has None), else
    the ``tale_calibration.json`` of the estimator's directory."""
    if hasattr(estimator, "calibration"):
        if estimator.calibration is None:
            raise MissingInputError(f"{directory}: the export holds no calibration; run `tale calibrate --predictor "
                                    f"{directory} --records RECORDS_DIR` (or calibrate the regressor and export it again)")
        return estimator.calibration
    return Calibration.load(directory)


def Calibrated(estimator: Estimator, calibration: Calibration, alpha: float,  # noqa: N802  (reads as a type)
               budget_range: BudgetRange | None = None) -> Scaled:
    """``estimator``'s budgets at risk ``alpha`` (``SPEC%ALPHA``): its unrounded budgets times exp(q), which suffice
    for at least 1 - alpha of new questions; refuses a calibration of another training of the estimator, and an
    alpha the calibration is too small for."""
    trained = getattr(estimator, "training_fingerprint", None)
    if calibration.source_fingerprint and trained and calibration.source_fingerprint != trained:
        raise InputError(f"this calibration ({calibration.estimator or 'unnamed'}) was fitted on another training "
                         "of the estimator (its training fingerprint differs): calibrate it again")
    return Scaled(estimator, calibration.factor(check_alpha(alpha)), budget_range, why="calibrate")
