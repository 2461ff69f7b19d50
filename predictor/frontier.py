"""The offline yardstick: every policy and every constant scored on the same recorded ladder outcomes.

A ladder record holds each held-out question's outcome at every rung, so a policy's choice of rung per question
is scored without generating again: its accuracy is the mean over questions of the chosen rung's share of
correct samples, its cost the mean of that rung's output tokens. Constants (every question at one rung) are
points too; mixing two constants at random reaches any point between them, so the constants' frontier is the
upper concave hull of their points. A policy beats the constants where its points lie above that hull.

Two numbers per estimator, each with a paired bootstrap interval (questions resampled; policy, constants and
the best constant recomputed on every resample):

- ``gain``: at the chosen setting, accuracy minus the constants' hull at the same mean tokens;
- ``saving``: along the estimator's frontier (all its settings), the mean tokens at the best constant's
  accuracy, as a fraction saved against that constant (the best constant chosen in hindsight).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from predictor.curves import CurveData


def scores(choices: Any, success: Any, tokens: Any) -> tuple[Any, Any]:
    """Accuracy and mean tokens of choice rows ``choices`` (L, n) rung indices, on (n, R) outcomes."""
    import numpy as np

    rows = np.arange(success.shape[0])
    return success[rows, choices].mean(axis=-1), tokens[rows, choices].mean(axis=-1)


def upper_hull(tokens: Sequence[float], accuracy: Sequence[float]) -> list[tuple[float, float]]:
    """The upper concave hull of (tokens, accuracy) points, from the cheapest to the most accurate: every
    point a random mixture of two of them reaches, and no point below it is worth choosing."""
    points = sorted(zip(tokens, accuracy), key=lambda p: (p[0], -p[1]))
    hull: list[tuple[float, float]] = []
    for t, a in points:
        if hull and a <= hull[-1][1]:
            continue  # more tokens, no more accuracy
        while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (t - hull[-2][0]) <= (a - hull[-2][1]) * (hull[-1][0] - hull[-2][0]):
            hull.pop()
        hull.append((t, a))
    return hull


def accuracy_at(hull: Sequence[tuple[float, float]], tokens: float) -> float:
    """The hull's accuracy at ``tokens``, linear between its points; beyond its ends the end's accuracy (fewer
    tokens than the cheapest point are not reachable: its accuracy is an upper bound there)."""
    if tokens <= hull[0][0]:
        return hull[0][1]
    for (t0, a0), (t1, a1) in zip(hull, hull[1:]):
        if tokens <= t1:
            return a0 + (a1 - a0) * (tokens - t0) / (t1 - t0)
    return hull[-1][1]


def tokens_at(hull: Sequence[tuple[float, float]], accuracy: float) -> float | None:
    """The fewest mean tokens at which the hull reaches ``accuracy``; None when it never does."""
    if accuracy <= hull[0][1]:
        return hull[0][0]
    for (t0, a0), (t1, a1) in zip(hull, hull[1:]):
        if accuracy <= a1:
            return t0 + (t1 - t0) * (accuracy - a0) / (a1 - a0)
    return None


@dataclass(frozen=True)
class Interval:
    value: float | None  # on the whole held-out set
    low: float | None  # 2.5th percentile over the bootstrap resamples
    high: float | None  # 97.5th
    resamples: int  # resamples where the number exists (a frontier that never reaches the accuracy has none)

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def _interval(value: float | None, draws: list[float | None], level: float = 0.95) -> Interval:
    import numpy as np

    kept = np.array([d for d in draws if d is not None], dtype=float)
    if len(kept) == 0:
        return Interval(value, None, None, 0)
    low, high = np.percentile(kept, [50 * (1 - level), 50 * (1 + level)])
    return Interval(value, float(low), float(high), len(kept))


def _compare(index: Any, data: CurveData, chosen: Any, sweep: Any) -> tuple[float, float | None, dict[str, float]]:
    """gain (chosen setting against the constants' hull) and saving (the sweep's hull at the best constant's
    accuracy) on the questions ``index``."""
    import numpy as np

    success, tokens = data.success[index], data.tokens[index]
    constant = np.tile(np.arange(len(data.rungs))[:, None], (1, len(index)))
    c_acc, c_tok = scores(constant, success, tokens)
    constants = upper_hull(c_tok.tolist(), c_acc.tolist())
    acc, tok = scores(chosen[None, index], success, tokens)
    gain = float(acc[0] - accuracy_at(constants, float(tok[0])))
    best = int(np.argmax(c_acc - 1e-12 * c_tok))  # the most accurate constant; the cheaper one on a tie
    s_acc, s_tok = scores(sweep[:, index], success, tokens)
    needed = tokens_at(upper_hull(s_tok.tolist(), s_acc.tolist()), float(c_acc[best]))
    saving = None if needed is None else 1 - needed / float(c_tok[best])
    return gain, saving, {"accuracy": float(acc[0]), "tokens": float(tok[0]), "best_constant_accuracy": float(c_acc[best]),
                          "best_constant_tokens": float(c_tok[best]), "best_constant": best}


def compare_to_constants(data: CurveData, chosen: Sequence[int], sweep: Sequence[Sequence[int]], *, resamples: int = 2000,
                         seed: int = 0) -> dict[str, Any]:
    """An estimator's chosen setting (``chosen``: a rung index per question) and its whole sweep (one row of
    choices per setting) against the constants, with paired bootstrap intervals."""
    import numpy as np

    chosen_a, sweep_a = np.asarray(chosen), np.asarray(sweep)
    everyone = np.arange(len(data))
    gain, saving, point = _compare(everyone, data, chosen_a, sweep_a)
    rng = np.random.default_rng(seed)
    gains, savings = [], []
    for _ in range(resamples):
        index = rng.integers(0, len(data), len(data))
        g, s, _ = _compare(index, data, chosen_a, sweep_a)
        gains.append(g)
        savings.append(s)
    return {**point, "gain": _interval(gain, gains).__dict__, "saving": _interval(saving, savings).__dict__, "questions": len(data),
            "resamples": resamples}


def frontier_points(data: CurveData, sweeps: Mapping[str, Sequence[Sequence[int]]]) -> dict[str, list[dict[str, float]]]:
    """Every setting's (accuracy, tokens) per estimator, plus the constants: the points of the frontier plot."""
    import numpy as np

    from data_builder.ladder import rung_name

    out: dict[str, list[dict[str, float]]] = {}
    constant = np.tile(np.arange(len(data.rungs))[:, None], (1, len(data)))
    acc, tok = scores(constant, data.success, data.tokens)
    out["constant"] = [{"rung": rung_name(r), "accuracy": float(a), "tokens": float(t)} for r, a, t in zip(data.rungs, acc, tok)]
    for name, sweep in sweeps.items():
        acc, tok = scores(np.asarray(sweep), data.success, data.tokens)
        out[name] = [{"accuracy": float(a), "tokens": float(t)} for a, t in zip(acc, tok)]
    return out
