"""``tale serve``'s settings, importable without the gateway's web stack (the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reasoner.errors import ConfigError

POLICIES = ("prompt", "cap", "both")
BUDGET_HEADER = "X-TALE-Budget"
OPT_OUT = ("off", "none")
WRAP_UP = "Your token budget is spent. Stop reasoning now and give only the final answer."
_FORWARDED_HEADERS = ("authorization", "openai-organization", "openai-project")


@dataclass(frozen=True)
class GatewayConfig:
    upstream: str  # the upstream's API root, e.g. http://127.0.0.1:8000/v1
    policy: str = "both"
    risk: float | None = None  # budgets that suffice for 1 - risk of questions (needs a calibrated export)
    slack: float = 1.0  # cap: max_tokens = ceil(budget * slack)
    window_ms: float = 2.0  # micro-batching: how long the first estimate waits for company
    max_batch: int = 32  # questions per onnxruntime call, at most
    max_body_bytes: int = 1_000_000
    timeout_s: float = 120.0  # upstream: connect, and each read
    request_log: Path | None = None  # JSONL of questions and budgets; None: nothing written
    cache_size: int = 10_000  # questions whose estimate is remembered (in memory only); 0: none
    # The ONNX export's model: fp32, since int8's dynamic quantization scales activations per batch, so a question's
    # budget would shift by a token or so with whatever other requests share its micro-batch.
    precision: str = "fp32"
    threads: int = 1  # CPU threads of the ONNX estimator
    # What the upstream is, so the budget goes into the field it honours for thinking (tale.serve.upstreams); the CLI
    # resolves "auto" to one of these before the gateway starts.
    upstream_kind: str = "openai-compatible"
    answer_reserve: int = 256  # tokens kept for the answer above a thinking budget: the cap is at least budget + this
    max_questions: int = 1024  # questions in one /v1/budgets request; more is a 413
    max_budget: int | None = None  # the largest budget a request may ask for (tale_budget, the header); None: the estimator's range top
    # With a curve estimator's ONNX export as the predictor: how each question's rung is chosen from its predicted curve,
    # price=LAMBDA or target=SHARE (predictor.policies); the rung is 0 (answer directly), a budget, or vanilla (no budget).
    curve_policy: str | None = None
    # A reply cut by the cap (finish_reason "length") gets one more short turn that asks for the final answer only
    # (WRAP_UP, at most answer_reserve tokens), joined to it: non-streaming budgeted requests, any upstream.
    graceful_cut: bool = False

    def __post_init__(self) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--upstream must be an http:// or https:// URL with a host, such as http://127.0.0.1:8000/v1; "
                              f"got {self.upstream!r}")
        if self.precision not in ("fp32", "int8"):
            raise ConfigError(f"--precision must be fp32 or int8, got {self.precision!r}")
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        from tale.serve.upstreams import UPSTREAM_KINDS

        if self.upstream_kind not in UPSTREAM_KINDS:
            raise ConfigError(f"--upstream-kind must be one of {UPSTREAM_KINDS} (or auto), got {self.upstream_kind!r}")
        if self.answer_reserve < 0:
            raise ConfigError(f"--answer-reserve must be >= 0, got {self.answer_reserve}")
        if self.max_questions < 1 or (self.max_budget is not None and self.max_budget < 1):
            raise ConfigError(f"--max-questions and --max-budget must be >= 1, got {self.max_questions}, {self.max_budget}")
        if self.curve_policy is not None:
            from predictor.policies import parse_policy

            if parse_policy(self.curve_policy).kind == "total":
                raise ConfigError(f"--curve-policy {self.curve_policy}: a total spans a list of questions; a gateway chooses per "
                                  "question (price=LAMBDA or target=SHARE)")
        if self.policy not in POLICIES:
            raise ConfigError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.slack < 1:
            raise ConfigError(f"slack must be >= 1, got {self.slack}")
        if self.max_batch < 1 or self.window_ms < 0 or self.max_body_bytes < 1 or self.timeout_s <= 0 or self.cache_size < 0:
            raise ConfigError("max_batch, max_body_bytes and timeout_s must be positive and window_ms >= 0")
