"""An estimator that sees the reasoner itself: a linear probe on its hidden state of the question.

The reasoner reads the question as it would be asked (its chat template over the vanilla prompt); the
features are the mean, over those prompt tokens, of one layer's hidden state (by default the middle
one: published probes find mid-layer states predict difficulty best). A ridge regression maps the
standardized features to the log budget. Its cost is one prefill of the reasoner per question (no
generation), which ``eval-predictor`` counts in its seconds per question.

The probe saves as JSON (weights, feature mean and scale, intercept, the reasoner and the layer): no
pickle, but loading it loads the reasoner again to compute features.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from predictor import META_FILE, BudgetRange
from predictor.data import Example, fingerprint
from predictor.target import length_batches
from reasoner.errors import ConfigError, InputError

PROBE_FILE = "probe.json"


@dataclass(frozen=True)
class ProbeConfig:
    model: str = "default"  # the reasoner whose hidden states are read: 'default', a directory or a hub id
    layer: int | None = None  # hidden_states index (0: embeddings); None: the middle layer
    alpha: float = 10.0  # ridge L2 strength, on standardized features
    max_length: int = 512  # prompt tokens kept
    batch_size: int = 8  # questions per prefill
    budget_range: BudgetRange = field(default_factory=BudgetRange)

    def __post_init__(self) -> None:
        if not self.alpha > 0 or self.max_length < 8 or self.batch_size < 1:
            raise ConfigError("alpha must be > 0, max_length >= 8 and batch_size >= 1")


def write_probe(directory: Path, meta: dict[str, Any], weights: dict[str, Any]) -> None:
    """A probe's directory: ``tale_predictor.json`` (``meta``, pointing at the weights) and ``probe.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).write_text(json.dumps({**meta, "weights": PROBE_FILE}, indent=2) + "\n")
    (directory / PROBE_FILE).write_text(json.dumps(weights) + "\n")


def read_probe(directory: Path, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``write_probe``'s meta and weights, refusing a directory of another estimator kind."""
    meta: dict[str, Any] = json.loads((Path(directory) / META_FILE).read_text())
    if meta.get("estimator") != kind:
        raise InputError(f"{Path(directory) / META_FILE}: expected a {kind} estimator, got {meta.get('estimator')!r}")
    return meta, json.loads((Path(directory) / meta["weights"]).read_text())


def held_features(probe: Any) -> ReasonerFeatures:
    """A probe's reasoner features, loaded on first use (its config at its layer) and kept on it: the budget probe
    and the curve probe share this."""
    if probe._features is None:
        probe._features = ReasonerFeatures(replace(probe.config, layer=probe.layer))
    return probe._features


class ReasonerFeatures:
    """Mean-pooled hidden states of one layer of a causal LM, for questions asked with the vanilla prompt."""

    def __init__(self, config: ProbeConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from reasoner.models import resolve_model

        path = resolve_model(config.model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        layers = self.model.config.num_hidden_layers
        self.layer = layers // 2 if config.layer is None else config.layer
        if not 0 <= self.layer <= layers:
            raise ValueError(f"layer must be in [0, {layers}] for {config.model}, got {self.layer}")
        self.config = config
        self._seen: dict[str, list[float]] = {}  # question -> features: a study asks for the same questions again

    def prompt_ids(self, question: str) -> list[int]:
        from reasoner.prompts import reasoning_prompt

        messages = reasoning_prompt(question).messages()
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"][-self.config.max_length:]

    def __call__(self, questions: Sequence[str]) -> list[list[float]]:
        new = list(dict.fromkeys(q for q in questions if q not in self._seen))
        for question, vector in zip(new, self._compute(new)):
            self._seen[question] = vector
        return [self._seen[q] for q in questions]

    def _compute(self, questions: Sequence[str]) -> list[list[float]]:
        import torch

        rows: list[list[float]] = [[] for _ in questions]
        for chunk in length_batches(questions, self.config.batch_size):
            ids = [self.prompt_ids(questions[i]) for i in chunk]
            width = max(len(x) for x in ids)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            with torch.inference_mode():
                states = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
            pooled = (states[self.layer] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            for i, vector in zip(chunk, pooled.tolist()):
                rows[i] = vector
        return rows


class ProbeEstimator:
    """Satisfies ``Estimator``: ridge on the reasoner's mean hidden state of the question, in log budget."""

    def __init__(self, config: ProbeConfig, layer: int, weights: list[float], mean: list[float], scale: list[float],
                 intercept: float, *, n_train: int = 0, training_fingerprint: str = "",
                 features: ReasonerFeatures | None = None) -> None:
        self.config, self.layer = config, layer
        self.weights, self.mean, self.scale, self.intercept = weights, mean, scale, intercept
        self.n_train, self.training_fingerprint = n_train, training_fingerprint
        self._features = features

    @property
    def budget_range(self) -> BudgetRange:
        return self.config.budget_range

    @property
    def features(self) -> ReasonerFeatures:
        return held_features(self)

    @classmethod
    def fit(cls, examples: Sequence[Example], config: ProbeConfig = ProbeConfig()) -> ProbeEstimator:
        import numpy as np

        if not examples:
            raise ValueError("no training examples")
        features = ReasonerFeatures(config)
        x = np.asarray(features([e.question for e in examples]), dtype=np.float64)
        y = np.log([e.budget for e in examples])
        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / scale
        intercept = float(y.mean())
        weights = np.linalg.solve(z.T @ z + config.alpha * np.eye(z.shape[1]), z.T @ (y - intercept))
        return cls(config, features.layer, weights.tolist(), mean.tolist(), scale.tolist(), intercept,
                   n_train=len(examples), training_fingerprint=fingerprint(examples), features=features)

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        import numpy as np

        if not questions:
            return []
        z = (np.asarray(self.features(list(questions))) - np.asarray(self.mean)) / np.asarray(self.scale)
        return [math.exp(min(v, 700.0)) for v in (z @ np.asarray(self.weights) + self.intercept).tolist()]

    def predict(self, questions: Sequence[str]) -> list[int]:
        return [self.config.budget_range.clamp(v) for v in self.predict_float(questions)]

    def save(self, directory: Path) -> None:
        write_probe(directory, {"estimator": "reasoner-probe", "model": self.config.model, "layer": self.layer,
                                "alpha": self.config.alpha, "max_length": self.config.max_length, "clamp_min": self.budget_range.min,
                                "clamp_max": self.budget_range.max, "target_transform": "log", "n_train": self.n_train,
                                "training_fingerprint": self.training_fingerprint},
                    {"weights": self.weights, "mean": self.mean, "scale": self.scale, "intercept": self.intercept})

    @classmethod
    def load(cls, directory: Path) -> ProbeEstimator:
        meta, weights = read_probe(directory, "reasoner-probe")
        config = ProbeConfig(model=meta["model"], layer=meta["layer"], alpha=meta["alpha"], max_length=meta["max_length"],
                             budget_range=BudgetRange(meta["clamp_min"], meta["clamp_max"]))
        return cls(config, meta["layer"], weights["weights"], weights["mean"], weights["scale"], weights["intercept"],
                   n_train=meta["n_train"], training_fingerprint=meta["training_fingerprint"])

