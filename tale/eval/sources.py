"""Estimators and budget sources by name, for the commands that compare them.

``build_estimator("bert:DIR")`` names an ``Estimator``: ``bert:DIR`` (a trained regressor), ``onnx:DIR``
(an ONNX export, torch-free), ``llm:MODEL`` (the paper's zero-shot estimator on any model),
``constant[:DIR]``, ``tfidf[:DIR]`` (baselines) and ``probe[:DIR]`` (a ridge probe on the reasoner's hidden
state of the question): saved, or fitted on the given training examples.

A budget source gives each question of an evaluation its budget and says what that cost
(``Assignment``): ``fixed:N``, ``matched:RUN_DIR`` (a constant at the mean budget of another evaluation run),
``replay:RUN_DIR`` (each question's budget in another evaluation run), ``oracle:RECORDS_DIR`` (the searched
budget of the question's record) or any estimator name above; ``llm`` with no model asks the reasoner
itself, as TALE-EP does.

A trained estimator's name may end in ``@FACTOR`` (``onnx:DIR@1.41``, ``tfidf@1.41``): its budgets
times FACTOR (``predictor.Aimed``); 1.41 aims a point estimate at the log-centre of [b*, 2b*].

A policy chooses each question's rung of a ladder from a curve estimator's predicted success curve
(``predictor.policies``): ``price=LAMBDA:DIR`` (the rung maximising P(correct) - LAMBDA x tokens),
``target=SHARE:DIR`` (the cheapest rung within SHARE of the vanilla rung's P) and ``total=T:DIR`` (T
expected tokens per question, spent greedily over each batch of questions). A rung of 0 is the direct
prompt, the top rung vanilla CoT.

A calibrated estimator's name may end in ``%ALPHA`` instead (``onnx:DIR%0.1``, ``bert:DIR%0.05``): its
budgets at risk ALPHA (``predictor.calibrate.Calibrated``), which suffice for at least 1 - ALPHA of new
questions; the calibration is the directory's ``tale_calibration.json`` (``tale calibrate``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from data_builder.record import BudgetRecord
from data_builder.sources import Problem
from predictor import Estimator
from reasoner.backends import Backend
from reasoner.errors import ConfigError

logger = logging.getLogger(__name__)

ESTIMATORS = ("bert:DIR, onnx:DIR, llm:MODEL, constant[:DIR], tfidf[:DIR], probe[:DIR] (each but llm optionally @FACTOR, "
              "or %ALPHA with a calibrated DIR)")
# Every name's kind, once: what its argument is (None: it takes none). The parsers and the CLI read this table.
KINDS: dict[str, str | None] = {"fixed": "N", "oracle": "RECORDS_DIR", "matched": "RUN_DIR", "replay": "RUN_DIR", "llm": None,
                                "bert": "DIR", "onnx": "DIR", "constant": "DIR", "tfidf": "DIR", "probe": "DIR"}
AIMABLE = ("bert", "onnx", "constant", "tfidf", "probe")  # estimators whose budgets @FACTOR and %ALPHA may scale


def takes_directory(kind: str) -> bool:
    """Whether a name of ``kind`` names a directory after its colon (the CLI checks that it exists)."""
    return (KINDS.get(kind) or "").endswith("DIR")
POLICIES = "price=LAMBDA:CURVES_DIR, target=SHARE:CURVES_DIR, total=MEAN_TOKENS:CURVES_DIR"
SOURCES = f"oracle:RECORDS_DIR, fixed:N, matched:RUN_DIR, replay:RUN_DIR, {POLICIES}, {ESTIMATORS}"

class UnknownNameError(ConfigError):
    """A name that is no estimator or budget source."""


BackendFor = Callable[[str], Backend]  # model name -> backend, so one model loads once
Fallback = Literal["no-budget", "default-budget"]


def split_aim(spec: str) -> tuple[str, float]:
    """``"onnx:DIR@1.41"`` -> ``("onnx:DIR", 1.41)``; a name without ``@`` has factor 1."""
    base, at, factor = spec.strip().rpartition("@")
    if not at:
        return spec.strip(), 1.0
    try:
        value = float(factor)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{spec!r}: '@' must be followed by a positive factor, as in 'tfidf@1.41'")
    if base.partition(":")[0] not in AIMABLE:
        raise ConfigError(f"{spec!r}: only {', '.join(AIMABLE)} budgets can be scaled with @FACTOR")
    return base, value


def split_risk(spec: str) -> tuple[str, float | None]:
    """``"onnx:DIR%0.1"`` -> ``("onnx:DIR", 0.1)``; a name without ``%`` has no risk (None)."""
    from predictor.calibrate import check_alpha

    base, percent, risk = spec.strip().rpartition("%")
    if not percent:
        return spec.strip(), None
    try:
        alpha = check_alpha(float(risk))
    except ValueError:
        raise ConfigError(f"{spec!r}: '%' must be followed by a risk in (0, 1), as in 'onnx:DIR%0.1'") from None
    kind, _, arg = base.partition(":")
    if kind not in AIMABLE or not arg:
        raise ConfigError(f"{spec!r}: a risk needs a calibrated estimator directory: "
                         f"{', '.join(k + ':DIR' for k in AIMABLE)}, then %ALPHA")
    if "@" in base:
        raise ConfigError(f"{spec!r}: choose a risk (%ALPHA) or a factor (@FACTOR), not both")
    return base, alpha


def build_estimator(
    spec: str,
    *,
    backend_for: BackendFor | None = None,
    train: Sequence[Any] | None = None,
    llm_default: int | None = None,
    probe_model: str = "default",
) -> Estimator:
    """The estimator ``spec`` names; ``train`` (``predictor.data.Example``s) fits ``constant``/``tfidf``
    without a directory (and ``probe``, on ``probe_model``'s hidden states) and sets the zero-shot
    default budget (its median) unless ``llm_default`` does."""
    from predictor import Aimed, load_estimator
    from predictor.baselines import ConstantEstimator, TfidfRidgeEstimator

    base, alpha = split_risk(spec)
    if alpha is not None:
        from predictor.calibrate import Calibrated, calibration_for

        estimator = build_estimator(base, backend_for=backend_for, train=train, llm_default=llm_default, probe_model=probe_model)
        return Calibrated(estimator, calibration_for(estimator, Path(base.partition(":")[2])), alpha)
    base, aim = split_aim(spec)
    if aim != 1.0:
        return Aimed(build_estimator(base, backend_for=backend_for, train=train, llm_default=llm_default, probe_model=probe_model), aim)
    kind, _, arg = base.partition(":")

    def fitted(cls: Any, *config: Any) -> Estimator:
        if arg:
            return load_estimator(Path(arg))
        if not train:
            raise ConfigError(f"{kind} needs a saved estimator directory here: '{kind}:DIR'")
        return cls.fit(train, *config)

    if kind == "constant":
        return fitted(ConstantEstimator)
    if kind == "tfidf":
        return fitted(TfidfRidgeEstimator)
    if kind == "probe":
        from predictor.probe import ProbeConfig, ProbeEstimator

        return fitted(ProbeEstimator, ProbeConfig(model=probe_model))
    if kind in ("bert", "onnx") and not arg:
        raise ConfigError(f"{kind} needs a directory: '{kind}:DIR'")
    if kind == "bert":
        return load_estimator(Path(arg))
    if kind == "onnx":
        from export.runtime import OnnxEstimator

        return OnnxEstimator.load(Path(arg))
    if kind == "llm":
        from predictor.llm import LLMEstimator, LLMEstimatorConfig

        if backend_for is None:
            raise ConfigError("llm estimators need a backend")
        default = llm_default or (ConstantEstimator.fit(train).budget if train else LLMEstimatorConfig.default_budget)
        return LLMEstimator(backend_for(arg or "default"), LLMEstimatorConfig(default_budget=default))
    raise UnknownNameError(f"unknown estimator {spec!r}; use {ESTIMATORS}")


# --- budget sources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """One question's budget and what finding it cost."""

    budget: int | None  # None: no budget; the question is asked with the vanilla prompt
    prompt_tokens: int = 0  # estimation call's input tokens (zero-shot LLM only)
    output_tokens: int = 0  # estimation call's output tokens
    seconds: float = 0.0  # this question's share of the estimation wall time
    fallback: Fallback | None = None  # no-budget: oracle had none; default-budget: the LLM stated none


class BudgetSource(Protocol):
    name: str

    def assign(self, problems: Sequence[Problem]) -> list[Assignment]: ...


class FixedBudget:
    """The same budget for every question, free."""

    def __init__(self, budget: int) -> None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ConfigError(f"a fixed budget must be a positive integer, got {budget!r}")
        self.name = f"fixed:{budget}"
        self.budget = budget

    def assign(self, problems: Sequence[Problem]) -> list[Assignment]:
        return [Assignment(self.budget) for _ in problems]


def matched_budget(run_dir: Path) -> FixedBudget:
    """A constant at another run's spend: the mean budget that evaluation run gave its budgeted questions
    (rounded), so that a constant and a learned estimator are compared at equal mean budget."""
    from statistics import mean

    from tale.eval.runs import load_rows

    budgets = [row.budget for row in load_rows(run_dir) if row.budget]
    if not budgets:
        raise ConfigError(f"{run_dir}: no budgeted evaluation rows to match (matched:RUN_DIR takes a tale evaluate run)")
    return FixedBudget(max(1, round(mean(budgets))))


class BudgetsById:
    """Budgets looked up by problem id (``self.budgets``); a question without one is asked with the
    vanilla prompt and counted as a ``no-budget`` fallback."""

    budgets: dict[str, int]

    def assign(self, problems: Sequence[Problem]) -> list[Assignment]:
        return [Assignment(b) if (b := self.budgets.get(p.id)) else Assignment(None, fallback="no-budget")
                for p in problems]


class ReplayedBudget(BudgetsById):
    """The budget each question had in another evaluation run, by problem id: another reasoner (or setting)
    under exactly the same budgets, paired question by question, with no estimator to rebuild. A question
    that run did not budget gets none (the vanilla prompt, a ``no-budget`` fallback). What the estimates
    cost was counted in that run, not here."""

    def __init__(self, run_dir: Path) -> None:
        from tale.eval.runs import load_rows

        self.name = f"replay:{run_dir}"
        self.budgets = {row.id: row.budget for row in load_rows(run_dir) if row.budget}
        if not self.budgets:
            raise ConfigError(f"{run_dir}: no budgeted evaluation rows to replay (replay:RUN_DIR takes a tale evaluate run)")


class OracleBudget(BudgetsById):
    """The searched budget of each question's record, matched by problem id.

    A question with no feasible record (its vanilla answer was wrong under the searching model, or it
    was never searched) gets no budget: it is asked with the vanilla prompt and counted as a
    ``no-budget`` fallback, so every question stays in the accuracy and token means.
    """

    def __init__(self, records: Sequence[BudgetRecord], name: str = "oracle") -> None:
        self.name = name
        self.budgets = {r.id: r.budget for r in records if r.feasible and r.budget}
        self.models = sorted({r.model for r in records if r.model})

    @classmethod
    def load(cls, directory: Path) -> OracleBudget:
        from data_builder.records import load_records

        return cls(load_records(Path(directory)), name=f"oracle:{directory}")



class EstimatorBudget:
    """Budgets from any ``Estimator``, timed; the zero-shot LLM's tokens are counted per question,
    and it is asked in each question's language (a Chinese question gets the Chinese estimation prompt)."""

    def __init__(self, estimator: Estimator, name: str) -> None:
        self.estimator = estimator
        self.name = name
        self._by_language: dict[str, Any] = {}

    def assign(self, problems: Sequence[Problem]) -> list[Assignment]:
        if not problems:
            return []
        if getattr(self.estimator, "estimate", None) is None:
            start = time.perf_counter()
            budgets = self.estimator.predict([p.question for p in problems])
            share = (time.perf_counter() - start) / len(problems)
            if len(budgets) != len(problems):
                raise RuntimeError(f"{self.name} returned {len(budgets)} budgets for {len(problems)} questions")
            return [Assignment(int(b), seconds=share) for b in budgets]
        assigned: dict[int, Assignment] = {}
        for language in dict.fromkeys(p.language for p in problems):
            indices = [i for i, p in enumerate(problems) if p.language == language]
            start = time.perf_counter()
            estimates = self._speaking(language).estimate([problems[i].question for i in indices])
            share = (time.perf_counter() - start) / len(indices)
            for i, e in zip(indices, estimates):
                fallback: Fallback | None = "default-budget" if e.source == "default" else None
                assigned[i] = Assignment(e.budget, e.prompt_tokens, e.output_tokens, share, fallback)
        return [assigned[i] for i in range(len(problems))]

    def _speaking(self, language: str) -> Any:
        """The zero-shot estimator with its prompt in ``language`` (same backend and settings)."""
        estimator: Any = self.estimator
        if estimator.config.language == language:
            return estimator
        if language not in self._by_language:
            self._by_language[language] = type(estimator)(estimator.backend, replace(estimator.config, language=language))
        return self._by_language[language]


class PolicyBudget:
    """Each question's rung from a curve estimator's predicted curve and a policy: 0 asks the direct prompt,
    the top rung (None) vanilla CoT, any other rung its budget. Timed like an estimator; free of tokens."""

    def __init__(self, curves: Any, policy: Any, name: str) -> None:
        self.curves, self.policy, self.name = curves, policy, name

    def assign(self, problems: Sequence[Problem]) -> list[Assignment]:
        if not problems:
            return []
        start = time.perf_counter()
        predicted = self.curves.curves([p.question for p in problems])
        chosen = self.policy.choose(predicted)
        share = (time.perf_counter() - start) / len(problems)
        return [Assignment(curve.rungs[i], seconds=share) for curve, i in zip(predicted, chosen)]


def split_policy(spec: str) -> tuple[Any, str] | None:
    """``"price=0.002:DIR"`` -> (``Policy("price", 0.002)``, ``"DIR"``); None for a spec that names no policy."""
    from predictor.policies import POLICY_KINDS, parse_policy

    head, _, arg = spec.strip().partition(":")
    if head.partition("=")[0] not in POLICY_KINDS:
        return None
    policy = parse_policy(head)
    if not arg:
        raise ConfigError(f"{spec!r}: a policy needs a curve estimator directory after ':' (tale train-curves writes one)")
    return policy, arg


def build_source(spec: str, *, reasoner: Backend, backend_for: BackendFor, llm_default: int | None = None) -> BudgetSource:
    """The budget source ``spec`` names; bare ``llm`` estimates with ``reasoner`` itself."""
    if (policy := split_policy(spec)) is not None:
        from export.load import load_curves_any

        return PolicyBudget(load_curves_any(Path(policy[1])), policy[0], spec.strip())
    kind, _, arg = spec.strip().partition(":")
    if kind == "fixed":
        try:
            return FixedBudget(int(arg))
        except ValueError:
            raise ConfigError(f"fixed needs a positive integer: 'fixed:N', got {spec!r}") from None
    if kind == "oracle":
        if not arg:
            raise ConfigError("oracle needs a records directory: 'oracle:RECORDS_DIR'")
        return OracleBudget.load(Path(arg))
    if kind == "matched":
        return matched_budget(Path(arg))
    if kind == "replay":
        return ReplayedBudget(Path(arg))
    if kind == "llm" and not arg:
        return EstimatorBudget(build_estimator("llm:self", backend_for=lambda _: reasoner, llm_default=llm_default), spec)
    try:
        return EstimatorBudget(build_estimator(spec, backend_for=backend_for, llm_default=llm_default), spec)
    except UnknownNameError:
        raise UnknownNameError(f"unknown budget source {spec!r}; use {SOURCES}") from None


def check_source(spec: str) -> str:
    """``spec`` if it names a budget source (nothing is loaded), else ``ValueError``."""
    if split_policy(spec) is not None:
        return spec.strip()
    kind, _, arg = split_aim(split_risk(spec)[0])[0].partition(":")
    if kind not in KINDS:
        raise UnknownNameError(f"unknown budget source {spec!r}; use {SOURCES}")
    if KINDS[kind] is not None and not arg:  # as a budget source every kind but llm names what it reads
        raise ConfigError(f"budget source {kind} needs an argument: '{kind}:{KINDS[kind]}'")
    if kind == "fixed" and not (arg.isdigit() and int(arg) >= 1):
        raise ConfigError(f"fixed needs a positive integer: 'fixed:N', got {spec!r}")
    return spec.strip()
