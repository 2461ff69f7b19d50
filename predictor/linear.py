"""The TF-IDF + ridge baseline as plain numbers: budgets in well under a millisecond, without scikit-learn or pickle.

``export.linear.export_tfidf(source, out)`` (``tale export`` on a TF-IDF directory) reads a saved
``predictor.baselines.TfidfRidgeEstimator`` directory (scikit-learn and joblib, so the full install) and writes one JSON file, ``tale_linear.json``: the
vocabulary in column order, each term's idf and ridge weight, the length feature's weight, the
intercept, the analyzer's settings, the clamp, the source's training fingerprint and, where the
source was calibrated, its conformal scores. ``LinearEstimator.load(out)`` reads it back with the
standard library only and computes what the pipeline does (``tests/test_linear_export.py`` holds it to 1e-9):

    terms   lowercase, then the words of ``token_pattern`` (scikit-learn's default: 2+ word characters),
            then every n-gram of 1..ngram_max of them joined by one space; unknown terms are dropped
    tfidf   (1 + ln count) * idf per known term, the row scaled to unit Euclidean norm
    output  tfidf . w + w_len * ln(1 + whitespace words) + intercept = ln(budget)

Unlike the joblib pipeline, loading this file runs no code from it, so an export may come from anyone.
It satisfies ``predictor.Estimator`` and loads through ``predictor.load_estimator`` (``tfidf:DIR``) and
``tale serve --predictor DIR``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predictor import BudgetRange
from predictor.calibrate import Calibration
from reasoner.errors import InputError, MissingInputError

LINEAR_FILE = "tale_linear.json"
FORMAT = "tale-linear"
FORMAT_VERSION = 1
KIND = "tfidf-linear"  # the ``estimator`` of its tale_predictor.json


@dataclass(frozen=True)
class Analyzer:
    """scikit-learn's word analyzer, as ``TfidfVectorizer`` was configured."""

    token_pattern: str = r"(?u)\b\w\w+\b"
    lowercase: bool = True
    ngram_min: int = 1
    ngram_max: int = 1

    def terms(self, question: str) -> list[str]:
        """The question's terms, in scikit-learn's order (``_word_ngrams``)."""
        words = re.findall(self.token_pattern, question.lower() if self.lowercase else question)
        terms = list(words) if self.ngram_min == 1 else []
        for n in range(max(2, self.ngram_min), min(self.ngram_max, len(words)) + 1):
            terms.extend(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
        return terms


def attach_calibration(directory: Path, calibration: Calibration) -> Path:
    """Write ``calibration`` into the export's ``tale_linear.json`` (replacing any there); atomic."""
    path = Path(directory) / LINEAR_FILE
    raw = json.loads(path.read_text())
    LinearEstimator.from_json(raw, str(path))  # refuse to touch a file that does not load
    raw["calibration"] = calibration.to_json()
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(raw) + "\n")
    partial.replace(path)
    return path


class LinearEstimator:
    """Satisfies ``Estimator``: the exported TF-IDF + ridge, in pure Python."""

    def __init__(self, weights: dict[str, tuple[float, float]], analyzer: Analyzer, *, intercept: float,
                 length_weight: float | None, sublinear_tf: bool, budget_range: BudgetRange,
                 training_fingerprint: str = "", calibration: Calibration | None = None) -> None:
        self.weights = weights  # term -> (idf, ridge weight)
        self.analyzer = analyzer
        self.intercept = intercept
        self.length_weight = length_weight  # None: the pipeline had no length feature
        self.sublinear_tf = sublinear_tf
        self.budget_range = budget_range
        self.training_fingerprint = training_fingerprint
        self.calibration = calibration  # the source's, copied at export; None if it was never calibrated

    def log_budget(self, question: str) -> float:
        """The ridge's output: the natural log of the budget."""
        value, norm = 0.0, 0.0
        for term, count in Counter(self.analyzer.terms(question)).items():
            if (found := self.weights.get(term)) is None:
                continue
            tf = 1.0 + math.log(count) if self.sublinear_tf else float(count)
            feature = tf * found[0]
            value += feature * found[1]
            norm += feature * feature
        value = value / math.sqrt(norm) if norm > 0 else 0.0
        if self.length_weight is not None:
            value += self.length_weight * math.log1p(len(question.split()))
        return value + self.intercept

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        """Budgets in tokens before rounding and clamping."""
        return [math.exp(min(self.log_budget(q), 700.0)) for q in questions]

    def predict(self, questions: Sequence[str]) -> list[int]:
        return [self.budget_range.clamp(v) for v in self.predict_float(questions)]

    @classmethod
    def load(cls, directory: Path) -> LinearEstimator:
        path = Path(directory) / LINEAR_FILE
        if not path.is_file():
            raise MissingInputError(f"{directory} holds no {LINEAR_FILE}: export a TF-IDF estimator with "
                                    f"`tale export --predictor TFIDF_DIR --out {directory}`")
        try:
            raw = json.loads(path.read_text())
        except ValueError as error:
            raise InputError(f"{path}: not JSON ({error})") from None
        return cls.from_json(raw, str(path))

    @classmethod
    def from_json(cls, raw: Any, where: str) -> LinearEstimator:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InputError(f"{where}: not a TALE linear export (field 'format' must be {FORMAT!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{where}: field 'format_version' is {raw.get('format_version')!r}, this code reads {FORMAT_VERSION}")
        try:
            terms, idf, coef = raw["terms"], raw["idf"], raw["coef"]
            if not len(terms) == len(idf) == len(coef):
                raise InputError(f"{where}: fields 'terms', 'idf' and 'coef' differ in length "
                                 f"({len(terms)}, {len(idf)}, {len(coef)})")
            a = raw["analyzer"]
            analyzer = Analyzer(a["token_pattern"], a["lowercase"], a["ngram_min"], a["ngram_max"])
            calibration = (Calibration.from_json(raw["calibration"], f"{where}: field 'calibration'")
                           if raw.get("calibration") is not None else None)
            return cls({t: (float(i), float(w)) for t, i, w in zip(terms, idf, coef)}, analyzer,
                       intercept=float(raw["intercept"]),
                       length_weight=None if raw["length_weight"] is None else float(raw["length_weight"]),
                       sublinear_tf=bool(raw["sublinear_tf"]),
                       budget_range=BudgetRange(raw["clamp_min"], raw["clamp_max"]),
                       training_fingerprint=str(raw.get("training_fingerprint", "")), calibration=calibration)
        except KeyError as error:
            raise InputError(f"{where}: field {error.args[0]!r} is missing") from None
        except (TypeError, ValueError) as error:
            if str(error).startswith(where):
                raise
            raise InputError(f"{where}: a field has the wrong type or value ({error})") from None


