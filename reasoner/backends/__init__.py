"""Generation backends: a batch of prompts in, one ``Generation`` per prompt out.

Four implementations satisfy ``Backend``: ``ort`` (local onnxruntime-genai, the fast CPU engine),
``hf`` (local transformers, also what training uses), ``vllm`` (vLLM's offline engine: continuous batching, CPU
or GPU) and ``openai`` (any OpenAI-compatible chat-completions server). Each counts output tokens itself, with the model's own tokenizer or
from the server's reported usage, never with a stand-in tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from reasoner.errors import ConfigError
from reasoner.prompts import Prompt


@dataclass(frozen=True)
class Generation:
    """What a backend returns for one prompt."""

    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" (end of sequence) or "length" (hit max_new_tokens)


class Backend(Protocol):
    """A reasoner. ``name`` identifies the model in records (a hub id, path or served name), ``identity`` the engine
    (``backend_identity``)."""

    name: str
    identity: str

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]: ...


# Output tokens per answer unless a command is told otherwise: every measurement in docs/ uses it.
MAX_NEW_TOKENS = 384
# The openai backend's server and key variable (OpenAIConfig's defaults; here so the CLI needs no httpx).
OPENAI_BASE_URL = "http://127.0.0.1:8000/v1"
OPENAI_API_KEY_ENV = "OPENAI_API_KEY"
OPENAI_TIMEOUT_S = 120.0  # per request, for connecting, writing and each read


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are chosen, shared by every backend."""

    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    seed: int = 0  # seeds sampling where the backend supports it

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


BACKENDS = ("ort", "hf", "vllm", "openai")


def backend_identity(kind: str, *, precision: str | None = None, dtype: str = "float32") -> str:
    """The engine as records and run identities name it: ``ort:int8`` (a precision is another model in effect),
    ``hf`` (float32; ``hf:bfloat16`` and so on otherwise), ``vllm:float32`` (always with its dtype), ``openai``.
    Every backend states its own as ``identity``."""
    if kind == "ort":
        return f"ort:{precision}"
    if kind == "vllm":
        return f"vllm:{dtype}"
    if kind == "hf" and dtype != "float32":
        return f"hf:{dtype}"
    return kind


def check_engine(configured: str, backend: object) -> None:
    """Refuse a run whose config names another engine than the backend it is given (its records would be labelled
    with the wrong engine); a backend that states no ``identity`` (a test's scripted one) is taken at its word."""
    actual = getattr(backend, "identity", None)
    if actual is not None and actual != configured:
        raise ConfigError(f"the run's config names backend {configured!r} but it was given a {actual!r} backend: "
                          "set the config's backend to the engine's identity")


def make_backend(kind: str, model: str, *, sampling: SamplingConfig | None = None, **options) -> Backend:
    """A backend by name: ``ort`` (options of ``ORTConfig``), ``hf`` (of ``HFConfig``), ``vllm`` (of ``VLLMConfig``)
    or ``openai`` (of ``OpenAIConfig``)."""
    sampling = sampling or SamplingConfig()
    if kind == "ort":
        from reasoner.backends.ort import ORTBackend, ORTConfig

        return ORTBackend(ORTConfig(model=model, sampling=sampling, **options))
    if kind == "hf":
        from reasoner.backends.hf import HFBackend, HFConfig

        return HFBackend(HFConfig(model=model, sampling=sampling, **options))
    if kind == "vllm":
        from reasoner.backends.vllm import VLLMBackend, VLLMConfig

        return VLLMBackend(VLLMConfig(model=model, sampling=sampling, **options))
    if kind == "openai":
        from reasoner.backends.openai import OpenAIBackend, OpenAIConfig

        return OpenAIBackend(OpenAIConfig(model=model, sampling=sampling, **options))
    raise ValueError(f"backend must be one of {BACKENDS}, got {kind!r}")
