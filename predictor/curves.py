"""Success curves: per question, P(correct | rung) and the expected output tokens at each rung of a ladder.

A ladder record (``data_builder.ladder``) observes each question's curve with K samples per rung; a curve
estimator predicts it from the question alone. Three live here, and a fourth in ``predictor.bert_curves`` (a fine-tuned
encoder with two outputs per rung, decoded by ``CurveHead``, exported to ONNX by ``export.onnx.export_curves``):

- ``MarginalCurves``: the question-blind curve, every question's the same (what any constant budget sees);
- ``TfidfCurves``: per rung, a logistic regression of correctness and a ridge regression of log output
  tokens on the question's TF-IDF plus a few counts (words, numbers, largest number's digits);
- ``ProbeCurves``: the same regressions on the reasoner's mean hidden state of the question (``predictor.probe``).

Every predicted success curve is made non-decreasing in the budget by isotonic regression (a larger budget
can always be used like a smaller one), so a policy never buys a rung that is predicted to do worse for
more tokens. Each saves to a directory whose ``tale_predictor.json`` says ``"estimator": "curves-..."``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from data_builder.ladder import LadderRecord, Rung, rung_name
from predictor.probe import ProbeConfig, ReasonerFeatures, held_features, read_probe, write_probe
from reasoner.errors import ConfigError, InputError, MissingInputError

logger = logging.getLogger(__name__)

META_FILE = "tale_predictor.json"
PIPELINE_FILE = "curves.joblib"


@dataclass(frozen=True)
class Curve:
    """One question's predicted (or observed) curve over a ladder's rungs, in ladder order."""

    rungs: tuple[Rung, ...]  # 0: direct; N: budget N; None: vanilla
    success: tuple[float, ...]  # P(correct) at each rung, non-decreasing for a predicted curve
    tokens: tuple[float, ...]  # expected output tokens at each rung


class CurveEstimator(Protocol):
    rungs: tuple[Rung, ...]

    def curves(self, questions: Sequence[str]) -> list[Curve]: ...


@dataclass(frozen=True)
class CurveData:
    """Ladder records as arrays: per question and rung, the success share and mean output tokens."""

    ids: tuple[str, ...]
    questions: tuple[str, ...]
    rungs: tuple[Rung, ...]
    success: Any  # numpy (n, R): share of correct samples
    tokens: Any  # numpy (n, R): mean output tokens
    samples: Any  # numpy (n, R): samples per rung

    @classmethod
    def of(cls, records: Sequence[LadderRecord]) -> CurveData:
        import numpy as np

        if not records:
            raise InputError("no ladder records")
        rungs = tuple(r.budget for r in records[0].rungs)
        for record in records:
            if tuple(r.budget for r in record.rungs) != rungs:
                raise InputError(f"{record.id} was asked on another ladder ({', '.join(rung_name(r.budget) for r in record.rungs)}) "
                                 f"than the first record ({', '.join(map(rung_name, rungs))})")
        return cls(
            ids=tuple(r.id for r in records), questions=tuple(r.question for r in records), rungs=rungs,
            success=np.array([[rung.success for rung in r.rungs] for r in records], dtype=float),
            tokens=np.array([[rung.mean_tokens for rung in r.rungs] for r in records], dtype=float),
            samples=np.array([[len(rung.samples) for rung in r.rungs] for r in records], dtype=float),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Any) -> CurveData:
        return CurveData(tuple(self.ids[i] for i in index), tuple(self.questions[i] for i in index), self.rungs,
                         self.success[index], self.tokens[index], self.samples[index])

    def observed(self) -> list[Curve]:
        """Each question's observed curve (not made monotone: what happened)."""
        return [Curve(self.rungs, tuple(s), tuple(t)) for s, t in zip(self.success.tolist(), self.tokens.tolist())]


def monotone(success: Sequence[float]) -> list[float]:
    """The closest non-decreasing sequence in squared error (isotonic regression, equal weights: pool
    adjacent violators). Standard library only, so the torch-free runtime shares it."""
    blocks: list[list[float]] = []  # [mean, count] of each pooled run
    for value in success:
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            blocks[-1] = [(blocks[-1][0] * blocks[-1][1] + mean * count) / (blocks[-1][1] + count), blocks[-1][1] + count]
    return [mean for mean, count in blocks for _ in range(int(count))]


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _rungs_json(rungs: Sequence[Rung]) -> list[str]:
    return [rung_name(r) for r in rungs]


def _rungs_from(names: Sequence[str]) -> tuple[Rung, ...]:
    from data_builder.ladder import parse_ladder

    return parse_ladder(",".join(names))


class MarginalCurves:
    """Satisfies ``CurveEstimator``: the training set's mean curve for every question."""

    kind = "curves-marginal"

    def __init__(self, rungs: Sequence[Rung], success: Sequence[float], tokens: Sequence[float], n_train: int = 0) -> None:
        self.rungs = tuple(rungs)
        self.curve = Curve(self.rungs, tuple(monotone(success)), tuple(float(t) for t in tokens))
        self.n_train = n_train

    @classmethod
    def fit(cls, data: CurveData) -> MarginalCurves:
        return cls(data.rungs, data.success.mean(axis=0).tolist(), data.tokens.mean(axis=0).tolist(), len(data))

    def curves(self, questions: Sequence[str]) -> list[Curve]:
        return [self.curve] * len(questions)

    def save(self, directory: Path) -> None:
        _write_meta(Path(directory), {"estimator": self.kind, "rungs": _rungs_json(self.rungs), "success": list(self.curve.success),
                                      "tokens": list(self.curve.tokens), "n_train": self.n_train})

    @classmethod
    def load(cls, directory: Path) -> MarginalCurves:
        meta = json.loads((Path(directory) / META_FILE).read_text())
        return cls(_rungs_from(meta["rungs"]), meta["success"], meta["tokens"], meta["n_train"])


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def question_counts(questions: Sequence[str]) -> Any:
    """Columns: ln(1 + words), ln(1 + numbers), ln(1 + digits of the largest number), has options (A. ...).
    Module level, so a pickled pipeline finds it by name."""
    import numpy as np

    rows = []
    for q in questions:
        numbers = _NUMBER.findall(q)
        digits = max((len(re.sub(r"\D", "", n)) for n in numbers), default=0)
        rows.append([math.log1p(len(q.split())), math.log1p(len(numbers)), math.log1p(digits), float(bool(re.search(r"\bA\. ", q)))])
    return np.array(rows)


@dataclass(frozen=True)
class TfidfCurvesConfig:
    """Settings of the TF-IDF curve estimator."""

    c: float = 1.0  # inverse L2 strength of each rung's logistic regression
    alpha: float = 1.0  # L2 strength of each rung's ridge regression of log tokens
    ngram_max: int = 2  # word n-grams of 1..ngram_max words
    min_df: int = 2  # drop terms found in fewer training questions than this

    def __post_init__(self) -> None:
        if not (self.c > 0 and self.alpha > 0):
            raise ConfigError(f"c and alpha must be > 0, got {self.c}, {self.alpha}")
        if self.ngram_max < 1 or self.min_df < 1:
            raise ConfigError(f"ngram_max and min_df must be >= 1, got {self.ngram_max}, {self.min_df}")


def fit_rungs(x: Any, data: CurveData, c: float, alpha: float) -> tuple[list[Any], list[Any]]:
    """Per rung, a logistic regression of each sample's correctness (a float where every sample agrees)
    and a ridge regression of log(1 + mean output tokens), on the feature rows ``x``."""
    import numpy as np
    from scipy.sparse import issparse, vstack
    from sklearn.linear_model import LogisticRegression, Ridge

    classifiers: list[Any] = []
    regressors: list[Any] = []
    for r in range(len(data.rungs)):
        k = data.samples[:, r]
        right = np.rint(data.success[:, r] * k)
        share = float(right.sum() / k.sum())
        if share in (0.0, 1.0):
            classifiers.append(share)
        else:  # a row per outcome, weighted by how many samples had it
            rows = vstack([x, x]) if issparse(x) else np.vstack([x, x])
            labels = np.r_[np.ones(len(data)), np.zeros(len(data))]
            weights = np.r_[right, k - right]
            keep = weights > 0
            classifiers.append(LogisticRegression(C=c, max_iter=2000).fit(rows[keep], labels[keep], sample_weight=weights[keep]))
        regressors.append(Ridge(alpha=alpha).fit(x, np.log1p(data.tokens[:, r])))
    return classifiers, regressors


def predict_rungs(x: Any, classifiers: Sequence[Any], regressors: Sequence[Any], rungs: tuple[Rung, ...]) -> list[Curve]:
    """The curves ``fit_rungs``'s models predict for feature rows ``x``, made monotone."""
    import numpy as np

    n = x.shape[0]
    success = np.column_stack([np.full(n, c) if isinstance(c, float) else c.predict_proba(x)[:, 1] for c in classifiers])
    tokens = np.column_stack([np.expm1(r.predict(x)).clip(min=1.0) for r in regressors])
    return [Curve(rungs, tuple(monotone(s)), tuple(float(t) for t in row)) for s, row in zip(success.tolist(), tokens.tolist())]


class TfidfCurves:
    """Satisfies ``CurveEstimator``: per rung, logistic P(correct) and ridge log-tokens on TF-IDF + counts.

    Each sample is one training row (a question with 1 of 2 samples right gives a positive and a negative
    row), so K samples weigh as K observations. A rung where every training sample agrees predicts that share.
    Saves with joblib, which is a pickle: load only directories you made or trust."""

    kind = "curves-tfidf"

    def __init__(self, rungs: Sequence[Rung], features: Any, classifiers: list[Any], regressors: list[Any],
                 config: TfidfCurvesConfig, n_train: int = 0) -> None:
        self.rungs = tuple(rungs)
        self.features, self.classifiers, self.regressors = features, classifiers, regressors
        self.config = config
        self.n_train = n_train

    @classmethod
    def fit(cls, data: CurveData, config: TfidfCurvesConfig = TfidfCurvesConfig()) -> TfidfCurves:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion, Pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        if len(data) < 2:
            raise InputError(f"a TF-IDF curve estimator needs at least 2 training questions, got {len(data)}")
        counts = Pipeline([("counts", FunctionTransformer(question_counts)), ("scale", StandardScaler())])
        features = FeatureUnion([("tfidf", TfidfVectorizer(ngram_range=(1, config.ngram_max), min_df=min(config.min_df, len(data)),
                                                           sublinear_tf=True)), ("counts", counts)])
        x = features.fit_transform(list(data.questions))
        classifiers, regressors = fit_rungs(x, data, config.c, config.alpha)
        return cls(data.rungs, features, classifiers, regressors, config, len(data))

    def curves(self, questions: Sequence[str]) -> list[Curve]:
        if not questions:
            return []
        return predict_rungs(self.features.transform(list(questions)), self.classifiers, self.regressors, self.rungs)

    def save(self, directory: Path) -> None:
        import joblib
        import sklearn

        directory = Path(directory)
        _write_meta(directory, {"estimator": self.kind, "rungs": _rungs_json(self.rungs), "pipeline": PIPELINE_FILE,
                                "config": asdict(self.config), "n_train": self.n_train, "sklearn": sklearn.__version__})
        joblib.dump({"features": self.features, "classifiers": self.classifiers, "regressors": self.regressors}, directory / PIPELINE_FILE)

    @classmethod
    def load(cls, directory: Path) -> TfidfCurves:
        """Unpickles ``curves.joblib``: only for directories you trust."""
        import joblib

        meta = json.loads((Path(directory) / META_FILE).read_text())
        parts = joblib.load(Path(directory) / meta["pipeline"])
        return cls(_rungs_from(meta["rungs"]), parts["features"], parts["classifiers"], parts["regressors"],
                   TfidfCurvesConfig(**meta["config"]), meta["n_train"])


class ProbeCurves:
    """Satisfies ``predictor.curves.CurveEstimator``: per rung of a ladder, a logistic regression of correctness
    and a ridge regression of log output tokens on the reasoner's standardized mean hidden state of the question.
    Saves as JSON (coefficients, feature mean and scale); loading it loads the reasoner again for features."""

    kind = "curves-probe"

    def __init__(self, config: ProbeConfig, layer: int, rungs: Sequence[Any], mean: list[float], scale: list[float],
                 success: list[Any], tokens: list[tuple[list[float], float]], *, n_train: int = 0,
                 features: ReasonerFeatures | None = None) -> None:
        self.config, self.layer, self.rungs = config, layer, tuple(rungs)
        self.mean, self.scale = mean, scale
        self.success = success  # per rung: a constant share, or (coefficients, intercept) of the logistic regression
        self.tokens = tokens  # per rung: (coefficients, intercept) of the ridge regression of log(1 + tokens)
        self.n_train = n_train
        self._features = features

    @property
    def features(self) -> ReasonerFeatures:
        return held_features(self)

    @classmethod
    def fit(cls, data: Any, config: ProbeConfig = ProbeConfig(), *, c: float = 0.1, alpha: float = 10.0,
            features: ReasonerFeatures | None = None, x: Any = None) -> ProbeCurves:
        """Fit on ``data`` (``CurveData``); ``x`` (its feature rows) saves computing them again."""
        import numpy as np

        features = features or ReasonerFeatures(config)
        raw = np.asarray(features(list(data.questions)) if x is None else x, dtype=np.float64)
        mean, scale = raw.mean(0), raw.std(0) + 1e-6
        classifiers, regressors = fit_rungs((raw - mean) / scale, data, c, alpha)
        success = [c_ if isinstance(c_, float) else (c_.coef_[0].tolist(), float(c_.intercept_[0])) for c_ in classifiers]
        tokens = [(r.coef_.tolist(), float(r.intercept_)) for r in regressors]
        return cls(config, features.layer, data.rungs, mean.tolist(), scale.tolist(), success, tokens, n_train=len(data),
                   features=features)

    def curves(self, questions: Sequence[str], x: Any = None) -> list[Any]:
        import numpy as np

        if not questions:
            return []
        z = (np.asarray(self.features(list(questions)) if x is None else x, dtype=np.float64) - self.mean) / self.scale
        columns = []
        for part in self.success:
            if isinstance(part, float):
                columns.append(np.full(len(questions), part))
            else:
                columns.append(1 / (1 + np.exp(-(z @ np.asarray(part[0]) + part[1]))))
        success = np.column_stack(columns)
        tokens = np.column_stack([np.expm1(z @ np.asarray(w) + b).clip(min=1.0) for w, b in self.tokens])
        return [Curve(self.rungs, tuple(monotone(s)), tuple(float(t) for t in row)) for s, row in zip(success.tolist(), tokens.tolist())]

    def save(self, directory: Path) -> None:
        write_probe(directory, {"estimator": self.kind, "model": self.config.model, "layer": self.layer,
                                "max_length": self.config.max_length, "rungs": _rungs_json(self.rungs), "n_train": self.n_train},
                    {"mean": self.mean, "scale": self.scale, "success": self.success, "tokens": self.tokens})

    @classmethod
    def load(cls, directory: Path) -> ProbeCurves:
        from data_builder.ladder import parse_ladder

        meta, weights = read_probe(directory, cls.kind)
        config = ProbeConfig(model=meta["model"], layer=meta["layer"], max_length=meta["max_length"])
        success = [s if isinstance(s, float) else (s[0], s[1]) for s in weights["success"]]
        return cls(config, meta["layer"], parse_ladder(",".join(meta["rungs"])), weights["mean"], weights["scale"], success,
                   [(w, b) for w, b in weights["tokens"]], n_train=meta["n_train"])


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


@dataclass(frozen=True)
class CurveHead:
    """How a network's 2R outputs per question become a curve over R rungs: outputs 0..R-1 are the logits of
    P(correct) at each rung, outputs R..2R-1 each rung's standardized log(1 + output tokens). Standard library only:
    the BERT curve estimator and its torch-free ONNX runtime decode with this one class."""

    rungs: tuple[Rung, ...]
    token_mean: tuple[float, ...]  # per rung: mean of log(1 + tokens) over the training questions
    token_std: tuple[float, ...]  # per rung: its standard deviation (floored, so a constant rung still decodes)

    def __post_init__(self) -> None:
        if not len(self.rungs) == len(self.token_mean) == len(self.token_std):
            raise ConfigError(f"a curve head needs a token mean and spread per rung, got {len(self.rungs)} rungs, "
                              f"{len(self.token_mean)} means and {len(self.token_std)} spreads")

    @property
    def outputs(self) -> int:
        return 2 * len(self.rungs)

    def decode(self, rows: Sequence[Sequence[float]]) -> list[Curve]:
        n = len(self.rungs)
        curves = []
        for row in rows:
            if len(row) != self.outputs:
                raise InputError(f"a curve head over {n} rungs reads {self.outputs} outputs per question, got {len(row)}")
            success = monotone([_sigmoid(z) for z in row[:n]])
            tokens = [max(1.0, math.expm1(z * s + m)) for z, m, s in zip(row[n:], self.token_mean, self.token_std)]
            curves.append(Curve(self.rungs, tuple(success), tuple(tokens)))
        return curves

    def to_json(self) -> dict[str, Any]:
        return {"rungs": _rungs_json(self.rungs), "token_mean": list(self.token_mean), "token_std": list(self.token_std)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CurveHead:
        return cls(_rungs_from(data["rungs"]), tuple(data["token_mean"]), tuple(data["token_std"]))


BERT_CURVES = "curves-bert"  # predictor.bert_curves.BertCurves (torch), loaded by export.load.load_curves_any
CURVE_KINDS = {MarginalCurves.kind: MarginalCurves, TfidfCurves.kind: TfidfCurves, ProbeCurves.kind: ProbeCurves}


def load_curves(directory: Path) -> CurveEstimator:
    """The marginal, TF-IDF or probe curve estimator saved in ``directory`` (``export.load.load_curves_any`` loads every
    kind, the BERT one and its ONNX export too)."""
    from predictor import estimator_kind

    kind = estimator_kind(directory)
    if kind is None:
        raise MissingInputError(f"{directory}: no {META_FILE} (a curve estimator is saved by tale train-curves)")
    if kind == BERT_CURVES:
        raise InputError(f"{directory}: a BERT curve estimator; load it with export.load.load_curves_any")
    if kind not in CURVE_KINDS:
        raise InputError(f"{Path(directory) / META_FILE}: {kind!r} is not a curve estimator ({', '.join([*CURVE_KINDS, BERT_CURVES])})")
    return CURVE_KINDS[kind].load(directory)


# --- calibration of the predicted probabilities --------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """How well predicted P(correct) matches the observed samples, per rung and over all."""

    brier: float  # mean squared error of p against each sample's 0/1 outcome
    ece: float  # expected calibration error over ``bins`` equal-width bins, weighted by samples
    base_rate_brier: float  # the Brier score of each rung's held-out base rate: what knowing only the rung achieves
    bins: list[dict[str, float]] = field(default_factory=list)  # mean p, observed rate and samples per bin
    per_rung: dict[str, dict[str, float]] = field(default_factory=dict)


def calibration(predicted: Sequence[Curve], data: CurveData, bins: int = 10) -> Calibration:
    """Brier score and ECE of predicted success against every held-out sample (each sample a 0/1 outcome)."""
    import numpy as np

    p = np.array([c.success for c in predicted], dtype=float)
    k = data.samples
    right = np.rint(data.success * k)
    # Brier over samples: a question-rung with r of k right contributes r (1-p)^2 + (k-r) p^2.
    brier = float(((right * (1 - p) ** 2 + (k - right) * p ** 2).sum()) / k.sum())
    rate = right.sum(axis=0) / k.sum(axis=0)
    base = float(((right * (1 - rate) ** 2 + (k - right) * rate ** 2).sum()) / k.sum())
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = k[mask].sum()
        if n == 0:
            continue
        mean_p = float((p[mask] * k[mask]).sum() / n)
        observed = float(right[mask].sum() / n)
        ece += n / k.sum() * abs(mean_p - observed)
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "mean_p": mean_p, "observed": observed, "samples": float(n)})
    per_rung = {}
    for r, rung in enumerate(data.rungs):
        kr, rr, pr = k[:, r], right[:, r], p[:, r]
        per_rung[rung_name(rung)] = {"brier": float((rr * (1 - pr) ** 2 + (kr - rr) * pr ** 2).sum() / kr.sum()),
                                     "mean_p": float((pr * kr).sum() / kr.sum()), "observed": float(rr.sum() / kr.sum())}
    return Calibration(brier, float(ece), base, rows, per_rung)
