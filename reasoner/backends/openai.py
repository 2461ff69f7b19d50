"""Generation through any OpenAI-compatible chat-completions server (vLLM, SGLang, hosted APIs,
``transformers serve``), with bounded concurrency and retries.

Token counts come from the server's reported ``usage``: the served model's own tokenizer. A
server that reports no usage is an error, never a reason to count with a stand-in tokenizer.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from reasoner.backends import OPENAI_API_KEY_ENV, OPENAI_BASE_URL, OPENAI_TIMEOUT_S, Generation, SamplingConfig
from reasoner.errors import ConfigError, TaleError
from reasoner.prompts import Prompt

logger = logging.getLogger(__name__)

# 408 and 429 ask the client to come back later; 5xx are the server's own failures.
RETRYABLE_STATUS = frozenset({408, 429})
MAX_DELAY_S = 60.0  # a longer Retry-After or backoff is capped: a run should not stall silently
EXCERPT_CHARS = 300
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BackendError(TaleError, RuntimeError):
    """A request that failed for good: a permanent HTTP error, retries exhausted, or a bad reply."""


@dataclass(frozen=True)
class OpenAIConfig:
    """Settings of the OpenAI-compatible backend. The API key itself is never part of them."""

    model: str  # the served model name, sent as ``model`` and recorded as the backend's name
    base_url: str = OPENAI_BASE_URL  # the API root; ``/chat/completions`` is appended
    api_key_env: str = OPENAI_API_KEY_ENV  # variable holding the key; unset means no Authorization header
    concurrency: int = 8  # requests in flight at once
    max_retries: int = 4  # retries after the first attempt, on 408/429/5xx, connection errors, timeouts
    timeout_s: float = OPENAI_TIMEOUT_S  # per request, for connecting, writing and each read (--request-timeout)
    backoff_s: float = 1.0  # first retry delay, doubled each retry with jitter; Retry-After wins
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("model must name the served model")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if not _ENV_NAME.fullmatch(self.api_key_env):
            # Not echoed: the usual mistake is pasting the key itself here.
            raise ConfigError("api_key_env must be the name of an environment variable, not the key")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.backoff_s < 0:
            raise ConfigError(f"backoff_s must be >= 0, got {self.backoff_s}")


class OpenAIBackend:
    """Satisfies ``Backend`` with a chat-completions server; one shared HTTP client, many threads."""

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.name = config.model
        self.identity = "openai"
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._api_key = os.environ.get(config.api_key_env) or None
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
        self._client = httpx.Client(headers=headers, timeout=config.timeout_s, limits=limits)
        self._sleep = time.sleep  # the wait between attempts (tests record the delays it is asked for)
        logger.info(
            "chat completions at %s for %s (%s)",
            self.url,
            config.model,
            "with an API key" if self._api_key else f"no API key: ${config.api_key_env} is unset",
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not prompts:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(prompts)))
        try:
            futures = [pool.submit(self._complete, prompt, max_new_tokens) for prompt in prompts]
            return [future.result() for future in futures]
        finally:
            # After a failure, requests not yet sent are dropped rather than spent.
            pool.shutdown(wait=True, cancel_futures=True)

    def _complete(self, prompt: Prompt, max_new_tokens: int) -> Generation:
        sampling = self.config.sampling
        body = {
            "model": self.config.model,
            "messages": prompt.messages(),
            # Older than max_completion_tokens, and the one that vLLM, SGLang and transformers serve all take.
            "max_tokens": max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
        }
        return self._parse(self._post(body))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        attempts = self.config.max_retries + 1
        for attempt in range(1, attempts + 1):
            retry_after = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as error:  # connection refused or reset, timeouts
                failure = f"{self.url} (model {self.config.model!r}): {type(error).__name__}: {error}"
                if isinstance(error, httpx.TimeoutException):
                    failure += (f" (no reply within {self.config.timeout_s:g} s: a slow server with {self.config.concurrency} requests "
                                "in flight needs a longer --request-timeout or a smaller --batch-size)")
            else:
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError:
                        raise BackendError(self._describe("a reply that is not JSON", response)) from None
                if not _retryable(response.status_code):
                    raise BackendError(self._describe(f"HTTP {response.status_code}", response))
                failure = self._describe(f"HTTP {response.status_code}", response)
                retry_after = _retry_after(response)
            if attempt == attempts:
                break
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            logger.warning("attempt %d/%d failed, retrying in %.2f s: %s", attempt, attempts, delay, failure)
            self._sleep(delay)
        raise BackendError(f"gave up after {attempts} attempts: {failure}")

    def _backoff(self, attempt: int) -> float:
        # Jitter keeps many threads that failed together from retrying together.
        return min(MAX_DELAY_S, self.config.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))

    def _parse(self, payload: dict[str, Any]) -> Generation:
        try:
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
            finish_reason = choice["finish_reason"]
        except (KeyError, IndexError, TypeError):
            what = "a reply without choices[0].message and finish_reason"
            raise BackendError(self._describe(what, payload)) from None
        usage = payload.get("usage") or {}
        prompt_tokens, output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt_tokens, int) or not isinstance(output_tokens, int):
            raise BackendError(
                self._describe("no token usage (prompt_tokens, completion_tokens) in the reply", payload)
                + "; token counts are taken from the server, never guessed"
            )
        # Stripped like the local backend's text, so records do not depend on the backend.
        return Generation(text.strip(), prompt_tokens, output_tokens, finish_reason)

    def _describe(self, what: str, reply: httpx.Response | dict[str, Any]) -> str:
        body = reply.text if isinstance(reply, httpx.Response) else repr(reply)
        excerpt = " ".join(body.split())[:EXCERPT_CHARS]
        if self._api_key:  # some servers echo a rejected key back
            excerpt = excerpt.replace(self._api_key, "***")
        return f"{self.url} (model {self.config.model!r}): {what}: {excerpt!r}"


def _retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None without one."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(MAX_DELAY_S, max(0.0, seconds))
