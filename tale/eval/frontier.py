"""The success-curve study: fit curve estimators on training ladders, choose each policy's setting on a
validation split of them, and score every policy, constant and the curve-noise ceiling once on held-out ladders.

Writes ``OUT/frontier.json`` (every point, the chosen settings, the comparisons with paired bootstrap intervals,
probability calibration), ``OUT/frontier.png`` (accuracy against mean output tokens), ``OUT/reliability.png`` and
the fitted estimators in ``OUT/estimators/NAME`` (usable as ``price=LAMBDA:OUT/estimators/tfidf`` budget sources).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_builder.ladder import LadderRecord, load_ladder, rung_name
from predictor.curves import Curve, CurveData, MarginalCurves, TfidfCurves, calibration
from predictor.frontier import compare_to_constants, frontier_points, scores
from predictor.policies import Policy
from reasoner.errors import ConfigError, InputError
from tale.eval.sources import build_estimator

logger = logging.getLogger(__name__)

# Each policy's settings, from spending everything on accuracy to spending nothing.
PRICES = (0.0, 0.0002, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.006, 0.008, 0.012, 0.02, 0.05, 1.0)
TARGETS = (1.0, 0.98, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.3, 0.0)
TOTALS = (400, 300, 250, 200, 175, 150, 125, 100, 80, 60, 40, 20, 1)


@dataclass(frozen=True)
class StudyConfig:
    """One study."""

    train: tuple[Path, ...]  # ladder directories to learn from
    test: tuple[Path, ...]  # held-out ladder directories, scored once
    out: Path
    validation: float = 0.25  # share of training questions (by id hash) on which each policy's setting is chosen
    resamples: int = 2000  # paired bootstrap resamples
    seed: int = 0
    probe_model: str | None = None  # also the reasoner probe on this model's hidden states (its directory); None: without
    budget_estimators: tuple[str, ...] = ()  # budget estimators by name (tfidf:DIR%0.1, onnx:DIR, ...), each budget on its rung
    bert_encoder: str | None = None  # also the BERT curve estimator fine-tuned from this encoder ("default": MiniLM); None: without
    bert_epochs: int = 10  # its epochs at most (early stopping)

    def __post_init__(self) -> None:
        if not 0 < self.validation < 1:
            raise ConfigError(f"validation must be in (0, 1), got {self.validation}")
        if not self.train or not self.test:
            raise ConfigError("a study needs training and held-out ladder directories")


def rung_for_budgets(budgets: Sequence[int], rungs: Sequence[Any]) -> list[int]:
    """Each budget's rung index: the smallest budget rung at or above it (the rung that grants at least that budget),
    vanilla above the largest; a budget estimator never answers directly, so the direct rung (0) is skipped."""
    budgeted = [(r, i) for i, r in enumerate(rungs) if r]  # 0 (direct) and None (vanilla) left out
    top = len(rungs) - 1 if rungs[-1] is None else budgeted[-1][1]
    return [next((i for r, i in budgeted if r >= b), top) for b in budgets]


def _in_validation(problem_id: str, share: float) -> bool:
    return int(hashlib.sha256(f"validation:{problem_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def _load(directories: Sequence[Path]) -> list[LadderRecord]:
    records = [r for d in directories for r in load_ladder(Path(d))]
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise InputError(f"question {r.id} is in more than one of {', '.join(map(str, directories))}")
        seen.add(r.id)
    return records


def _sweep(kind: str, values: Sequence[float], curves: list[Curve]) -> list[tuple[Policy, list[int]]]:
    return [(p, p.choose(curves)) for p in (Policy(kind, v) for v in values)]


def _sweeps(curves: list[Curve]) -> dict[str, list[tuple[Policy, list[int]]]]:
    return {kind: _sweep(kind, values, curves) for kind, values in (("price", PRICES), ("target", TARGETS), ("total", TOTALS))}


def _best_setting(sweep: list[tuple[Policy, list[int]]], data: CurveData) -> Policy:
    """The setting whose accuracy beats the constants' hull at its mean tokens by the most, on ``data``."""
    import numpy as np

    from predictor.frontier import accuracy_at, upper_hull

    constant = np.tile(np.arange(len(data.rungs))[:, None], (1, len(data)))
    c_acc, c_tok = scores(constant, data.success, data.tokens)
    hull = upper_hull(c_tok.tolist(), c_acc.tolist())
    gains = []
    for policy, chosen in sweep:
        acc, tok = scores(np.asarray(chosen)[None], data.success, data.tokens)
        gains.append((float(acc[0]) - accuracy_at(hull, float(tok[0])), policy))
    return max(gains, key=lambda g: g[0])[1]


def validation_split(data: CurveData, share: float) -> tuple[CurveData, CurveData]:
    """(fit, validation): the questions whose id hashes into ``share`` are the validation part; refused with one line
    when either part holds fewer than 2 questions."""
    valid_mask = [_in_validation(i, share) for i in data.ids]
    fit_part = data.subset([i for i, v in enumerate(valid_mask) if not v])
    valid = data.subset([i for i, v in enumerate(valid_mask) if v])
    if len(fit_part) < 2 or len(valid) < 2:
        raise InputError(f"too few training questions to split for validation: {len(data)} "
                         f"({len(fit_part)} to fit, {len(valid)} to validate at share {share:g}); ask more questions")
    return fit_part, valid


def fit_priced(data: CurveData, share: float) -> tuple[TfidfCurves, Policy, dict[str, int]]:
    """The main job's curve stage (``tale run --search ladder``): TF-IDF curves fitted on the questions outside a
    validation share, the price per token chosen on that share (the ``PRICES`` value whose accuracy beats the constant
    rungs' hull by the most at its mean tokens), then refitted on every question with that price kept."""
    fit_part, valid = validation_split(data, share)
    sweep = _sweep("price", PRICES, TfidfCurves.fit(fit_part).curves(list(valid.questions)))
    return TfidfCurves.fit(data), _best_setting(sweep, valid), {"fit": len(fit_part), "validation": len(valid)}


def run_study(config: StudyConfig) -> dict[str, Any]:
    train_records, test_records = _load(config.train), _load(config.test)
    overlap = {r.id for r in train_records} & {r.id for r in test_records}
    if overlap:
        raise InputError(f"{len(overlap)} questions are both training and held out (first: {sorted(overlap)[0]})")
    train_all = CurveData.of(train_records)
    test = CurveData.of(test_records)
    if test.rungs != train_all.rungs:
        raise InputError("training and held-out ladders have different rungs")
    fit_part, valid = validation_split(train_all, config.validation)

    makers: dict[str, Any] = {"marginal": MarginalCurves.fit, "tfidf": TfidfCurves.fit}
    if config.probe_model:
        from predictor.curves import ProbeCurves
        from predictor.probe import ProbeConfig, ReasonerFeatures

        probe = ProbeConfig(model=config.probe_model)
        features = ReasonerFeatures(probe)  # one prefill per question, remembered across the fits

        def fit_probe(data: CurveData) -> ProbeCurves:
            return ProbeCurves.fit(data, probe, features=features)

        makers["probe"] = fit_probe
    if config.bert_encoder:
        from predictor.bert_curves import BertCurves, BertCurvesConfig

        bert = BertCurvesConfig(encoder=config.bert_encoder, epochs=config.bert_epochs, seed=config.seed)

        def fit_bert(data: CurveData) -> BertCurves:
            return BertCurves.fit(data, bert)

        makers["bert"] = fit_bert
    report: dict[str, Any] = {
        "train": [str(p) for p in config.train], "test": [str(p) for p in config.test],
        "questions": {"train": len(fit_part), "validation": len(valid), "test": len(test)},
        "rungs": [rung_name(r) for r in test.rungs], "config": {k: str(v) for k, v in asdict(config).items()},
        "chosen": {}, "comparisons": {}, "calibration": {},
    }
    sweeps_for_plot: dict[str, list[list[int]]] = {}
    for name, make in makers.items():
        on_valid = make(fit_part).curves(list(valid.questions))
        chosen_settings = {kind: _best_setting(sweep, valid) for kind, sweep in _sweeps(on_valid).items()}
        model = make(train_all)  # refit on every training question, settings kept
        model.save(config.out / "estimators" / name)
        predicted = model.curves(list(test.questions))
        report["calibration"][name] = asdict(calibration(predicted, test))
        for kind, sweep in _sweeps(predicted).items():
            policy = chosen_settings[kind]
            chosen = policy.choose(predicted)
            label = f"{name} {kind}"
            report["chosen"][label] = str(policy)
            report["comparisons"][label] = compare_to_constants(test, chosen, [c for _, c in sweep], resamples=config.resamples,
                                                                seed=config.seed)
            sweeps_for_plot[label] = [c for _, c in sweep]
    # The curve-noise ceiling: a policy that knew each held-out question's observed curve (optimistic: it is
    # scored on the same samples it chose from).
    observed = test.observed()
    ceiling = _sweep("price", PRICES, observed)
    sweeps_for_plot["ceiling (observed curves)"] = [c for _, c in ceiling]
    report["comparisons"]["ceiling (observed curves)"] = compare_to_constants(
        test, _best_setting(ceiling, test).choose(observed), [c for _, c in ceiling], resamples=config.resamples, seed=config.seed)
    for spec in config.budget_estimators:  # one budget per question, on the cheapest rung that grants it
        chosen = rung_for_budgets(build_estimator(spec).predict(list(test.questions)), test.rungs)
        label = f"budgets {spec}"
        sweeps_for_plot[label] = [chosen]
        report["comparisons"][label] = compare_to_constants(test, chosen, [chosen], resamples=config.resamples, seed=config.seed)
    report["points"] = frontier_points(test, sweeps_for_plot)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "frontier.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_frontier(report, config.out / "frontier.png")
    plot_reliability(report, config.out / "reliability.png")
    return report


def plot_frontier(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    constants = report["points"]["constant"]
    ax.plot([p["tokens"] for p in constants], [100 * p["accuracy"] for p in constants], "ks--", label="constant rung")
    for p in constants:
        ax.annotate(p["rung"], (p["tokens"], 100 * p["accuracy"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    for name, points in report["points"].items():
        if name == "constant":
            continue
        style = ":" if name.startswith("ceiling") else "-"
        ordered = sorted(points, key=lambda p: p["tokens"])
        ax.plot([p["tokens"] for p in ordered], [100 * p["accuracy"] for p in ordered], style, marker=".", label=name)
    ax.set_xlabel("mean output tokens per question")
    ax.set_ylabel("accuracy (%)")
    q = report["questions"]
    ax.set_title(f"held-out ladder: {q['test']} questions (trained on {q['train'] + q['validation']})", loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    for name, cal in report["calibration"].items():
        bins = cal["bins"]
        ax.plot([b["mean_p"] for b in bins], [b["observed"] for b in bins], "o-",
                label=f"{name}: ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}")
    ax.set_xlabel("predicted P(correct)")
    ax.set_ylabel("observed share correct")
    ax.set_title("held-out reliability, every rung", loc="left")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
