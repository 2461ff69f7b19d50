"""The reasoner probe estimator: ridge on a causal LM's mid-layer hidden state of the question."""

from __future__ import annotations

import math
from pathlib import Path

from test_predictor import synthetic


def test_reasoner_probe_fits_saves_and_loads(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from predictor import load_estimator
    from predictor.probe import ProbeConfig, ProbeEstimator
    from tale.eval.sources import build_estimator

    train, test = synthetic(60), synthetic(12, seed=9)
    probe = ProbeEstimator.fit(train, ProbeConfig(model=str(tiny_lm_dir), alpha=1.0, batch_size=4))
    assert probe.layer == probe.features.model.config.num_hidden_layers // 2 and len(probe.weights) == len(probe.mean)
    questions = [e.question for e in test]
    budgets = probe.predict(questions)
    assert all(8 <= b <= 1024 for b in budgets) and len(set(budgets)) > 1  # it tells questions apart
    # a random tiny model's states still carry the question's length, which sets these budgets: it beats the mean
    errors = [abs(math.log(p / e.budget)) for p, e in zip(probe.predict_float(questions), test)]
    mean_budget = math.exp(sum(math.log(e.budget) for e in train) / len(train))
    assert sum(errors) < sum(abs(math.log(mean_budget / e.budget)) for e in test)
    probe.save(tmp_path / "probe")
    again = load_estimator(tmp_path / "probe")
    assert isinstance(again, ProbeEstimator) and again.predict(questions) == budgets
    assert build_estimator(f"probe:{tmp_path / 'probe'}").predict(questions) == budgets


def test_a_bare_probe_is_fitted_on_the_probe_model(tiny_lm_dir: Path) -> None:
    from tale.eval.sources import build_estimator

    probe = build_estimator("probe", train=synthetic(20), probe_model=str(tiny_lm_dir))
    assert probe.config.model == str(tiny_lm_dir) and probe.n_train == 20
