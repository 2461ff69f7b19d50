"""``tale serve``: a budget-aware, OpenAI-compatible gateway in front of any chat-completions server.

Each ``POST /v1/chat/completions`` takes its last user message as the question, estimates the question's
token budget with the ONNX regressor (calibrated at the risk asked, where the export carries a
calibration), applies the policy and forwards the request to the upstream (vLLM, SGLang, llama.cpp's
server, ``transformers serve``, a hosted API), streaming passed through chunk by chunk:

- ``prompt``: the user message gets TALE-EP's closing line, "Let's think step by step and use less
  than N tokens:";
- ``cap``: ``max_tokens`` (or ``max_completion_tokens``, where the request uses it) is set to the budget
  times ``slack``, never above what the request asked;
- ``both``: the two together.

The budget comes back in the ``X-TALE-Budget`` response header and, for a non-streaming reply, in the
body's ``tale`` field. A request sets its own budget with ``"tale_budget": N`` in the body or the
``X-TALE-Budget: N`` header, or opts out with ``off`` there; a request without a user message passes
through unchanged. ``POST /v1/budgets`` gives budgets for a list of questions, optionally spending a
total over them (``predictor.allocate``). ``GET /healthz``; ``GET /metrics`` (Prometheus).

Concurrent estimates are micro-batched: requests arriving within ``window_ms`` of each other share one
onnxruntime call, run off the event loop. Upstream errors come back with the upstream's status and a
clear error body; a timeout is a 504, an unreachable upstream a 502. A client that disconnects
mid-stream closes the upstream request. The Authorization header is forwarded, never logged; request
text is written to disk only with ``request_log``. Needs starlette, uvicorn, aiohttp and
prometheus-client, no torch (the ``light`` extra).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import JSONResponse

from predictor import BudgetRange
from reasoner.errors import InputError
from reasoner.prompts import budget_instruction
from tale.serve.config import BUDGET_HEADER, OPT_OUT, POLICIES, GatewayConfig  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from predictor.calibrate import Calibration

logger = logging.getLogger(__name__)

class RequestError(Exception):
    """A request the gateway refuses: its HTTP status and a message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str, kind: str = "invalid_request_error", **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, **extra}}, status_code=status)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tale_requests", "Requests by route and outcome", ["route", "outcome"], registry=self.registry)
        self.estimate_seconds = Histogram("tale_estimate_seconds", "Seconds per estimate call",
                                          buckets=(.001, .002, .005, .01, .02, .05, .1, .2, .5, 1), registry=self.registry)
        self.batch_size = Histogram("tale_estimate_batch_questions", "Questions per estimate call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.budgets = Histogram("tale_budget_tokens", "Budgets applied to chat requests",
                                 buckets=(16, 32, 64, 128, 256, 512, 1024), registry=self.registry)
        self.upstream_seconds = Histogram("tale_upstream_seconds", "Seconds until the upstream's response headers",
                                          registry=self.registry)
        self.upstream_errors = Counter("tale_upstream_errors", "Upstream failures by status (or timeout, unreachable)",
                                       ["status"], registry=self.registry)
        self.cache_hits = Counter("tale_estimate_cache_hits", "Questions answered from the estimate cache", registry=self.registry)


class MicroBatcher:
    """Collects estimate requests for ``window`` seconds (or ``max_batch`` questions) and answers them
    with one call of ``estimate`` in a worker thread, so the event loop never waits on onnxruntime.

    ``inline``: answer each request at once on the event loop, for an estimator that is cheap pure Python
    (the linear export: a dot product per question, which batching does not make cheaper). In a thread it
    would hold the GIL against the loop, which then waits for Python's switch interval (5 ms)."""

    def __init__(self, estimate: Callable[[list[str]], list[float]], window: float, max_batch: int, metrics: Metrics,
                 inline: bool = False):
        self.estimate, self.window, self.max_batch, self.metrics, self.inline = estimate, window, max_batch, metrics, inline
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tale-estimate")
        self.task: asyncio.Task | None = None
        self.carried: tuple[list[str], asyncio.Future] | None = None  # a request that did not fit the last batch

    async def submit(self, questions: list[str]) -> list[float]:
        if self.inline:
            started = time.perf_counter()
            estimates = self.estimate(questions)
            self.metrics.estimate_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(questions))
            return estimates
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((questions, future))
        return await future

    def start(self) -> None:
        if not self.inline:
            self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first, self.carried = self.carried or await self.queue.get(), None
            batch = [first]
            size, deadline = len(first[0]), loop.time() + self.window
            while size < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    following = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
                if size + len(following[0]) > self.max_batch:  # never over max_batch: it opens the next batch instead
                    self.carried = following
                    break
                batch.append(following)
                size += len(following[0])
            questions = [q for qs, _ in batch for q in qs]
            started = time.perf_counter()
            try:
                estimates = await loop.run_in_executor(self.executor, self.estimate, questions)
            except Exception as error:  # every waiting request learns of it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.metrics.estimate_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(questions))
            start = 0
            for qs, future in batch:
                if not future.done():  # a cancelled request (client gone) is skipped
                    future.set_result(estimates[start:start + len(qs)])
                start += len(qs)


LIST_CHUNKS = 4  # a budgets list is estimated in chunks of max_batch // LIST_CHUNKS questions
MAX_DEPTH = 32  # JSON nesting a request body may have (a chat request with content parts needs about 6)


def nesting(value: Any) -> int:
    """How deep ``value`` nests lists and objects (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def last_user_text(messages: list[dict[str, Any]]) -> tuple[int, str] | None:
    """(index, text) of the last user message, its text parts joined; None when there is none."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            content = messages[index].get("content")
            if isinstance(content, str):
                return index, content
            parts = [p.get("text", "") for p in content or [] if p.get("type") == "text"]
            return (index, "\n".join(parts)) if parts else None
    return None


def check_chat_body(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "field 'messages': must be a non-empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(400, f"field 'messages[{i}].role': every message needs a role (a string)")
        content = message.get("content")
        if content is not None and not isinstance(content, str) and not (
                isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content)):
            raise RequestError(400, f"field 'messages[{i}].content': must be a string or a list of typed parts")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RequestError(400, "field 'stream': must be true or false")
    return messages


def requested_budget(value: Any, where: str, largest: int) -> int | str | None:
    """A request's own budget: an integer from 0 (answer directly) up to ``largest``, 'off', or None (not given)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in OPT_OUT:
        return "off"
    try:
        budget = int(value) if not isinstance(value, bool) and float(value) == int(float(value)) else -1
    except (TypeError, ValueError):
        budget = -1
    except OverflowError:  # infinite
        budget = largest + 1 if float(value) > 0 else -1
    if budget < 0:
        raise RequestError(400, f"{where}: a budget must be an integer from 0 (answer directly) or 'off', got {value!r}")
    if budget > largest:
        raise RequestError(400, f"{where}: {value!r} is above the largest budget this gateway takes ({largest}, --max-budget)")
    return budget


def apply_policy(body: dict[str, Any], index: int, budget: int, policy: str, slack: float) -> dict[str, Any]:
    """The request to forward: TALE-EP's budget line appended to message ``index`` and/or a token cap."""
    body = dict(body)
    if policy in ("prompt", "both"):
        messages = [dict(m) for m in body["messages"]]
        content, line = messages[index]["content"], budget_instruction(budget)
        messages[index]["content"] = (f"{content}\n{line}" if isinstance(content, str)
                                      else [*content, {"type": "text", "text": line}])
        body["messages"] = messages
    if policy in ("cap", "both"):
        cap = math.ceil(budget * slack)
        field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        asked = body.get(field)
        body[field] = min(cap, asked) if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else cap
    return body


class Gateway:
    """The service: one estimator, one upstream client, the metrics."""

    def __init__(self, config: GatewayConfig, estimate: Callable[[list[str]], list[float]], budget_range: BudgetRange,
                 calibration: Calibration | None = None, name: str = "", inline: bool = False, rungs: bool = False) -> None:
        if config.risk is not None and calibration is None:
            raise InputError(f"{name or 'the predictor'}: a risk needs a calibrated export (tale calibrate, then tale export)")
        self.config, self.budget_range, self.name, self.calibration = config, budget_range, name, calibration
        self.rungs = rungs  # the estimates are a curve policy's rungs (0 direct, N, inf vanilla), not budgets to scale
        self.scores = calibration.scores if calibration else None
        self.factor = calibration.factor(config.risk) if config.risk is not None else 1.0  # refuses a risk too small
        self.metrics = Metrics()
        self.batcher = MicroBatcher(estimate, config.window_ms / 1000, config.max_batch, self.metrics, inline)
        self.client: aiohttp.ClientSession | None = None
        self.chat_url = config.upstream.rstrip("/") + "/chat/completions"
        self.cache: OrderedDict[str, float] = OrderedDict()  # question -> estimate, least recently used first

    async def estimates(self, questions: list[str]) -> list[float]:
        """The estimator's unrounded budgets: remembered ones from the cache, the others in micro-batches.

        A long list goes to the estimator in chunks of a quarter micro-batch (``max_batch // LIST_CHUNKS``), each queued
        only when the one before is answered, so chat requests that arrive meanwhile are estimated between its chunks,
        in a batch the chunk leaves room in: one client's list holds a chat request back by about one batch, not the list."""
        known = {q: self.cache[q] for q in questions if q in self.cache}  # before any await: others may evict
        missing = list(dict.fromkeys(q for q in questions if q not in known))
        self.metrics.cache_hits.inc(sum(q in known for q in questions))
        step = max(1, self.config.max_batch // LIST_CHUNKS)
        for start in range(0, len(missing), step):
            chunk = missing[start:start + step]
            known.update(zip(chunk, await self.batcher.submit(chunk)))
            if self.batcher.inline and start + step < len(missing):
                await asyncio.sleep(0)  # an inline estimator runs on the loop: let waiting requests in between chunks
        for question in dict.fromkeys(questions):
            self.cache[question] = known[question]
            self.cache.move_to_end(question)
        while len(self.cache) > self.config.cache_size:
            self.cache.popitem(last=False)
        return [known[q] for q in questions]

    def budget(self, estimate: float, factor: float | None = None) -> int | None:
        """A chat request's budget from its estimate: scaled and clamped; for a curve policy, the rung as it is (0: answer
        directly; None: vanilla, no budget)."""
        if self.rungs:
            return None if math.isinf(estimate) else int(estimate)
        return self.budget_range.clamp(estimate * (self.factor if factor is None else factor))

    async def startup(self) -> None:
        # What is loaded by now (the estimator, its vocabulary, the libraries) lives as long as the service:
        # moved out of the collector's reach, a full collection no longer walks it. On 2 cores one took 44 to
        # 79 ms with a linear export loaded, and every request in flight waited for it (the p99).
        gc.collect()
        gc.freeze()
        # aiohttp, not httpx: on 2 cores at 16 concurrent requests httpx's client spent 4.4 ms of CPU per request
        # against aiohttp's 0.5 (docs/results/serve-overhead.md). The timeout bounds connecting and each wait for
        # bytes (a stalled stream), not a whole stream.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.timeout_s, sock_read=self.config.timeout_s)
        self.client = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
        self.batcher.start()

    async def shutdown(self) -> None:
        await self.batcher.stop()
        if self.client:
            await self.client.close()

    async def read_json(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            raise RequestError(413, f"request body of {declared} bytes is over the limit of {self.config.max_body_bytes}")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > self.config.max_body_bytes:
                raise RequestError(413, f"request body is over the limit of {self.config.max_body_bytes} bytes")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(400, f"the request body is not valid JSON ({error})") from None
        except RecursionError:
            raise RequestError(400, f"the request body is nested more than {MAX_DEPTH} levels deep") from None
        if nesting(body) > MAX_DEPTH:
            raise RequestError(400, f"the request body is nested more than {MAX_DEPTH} levels deep")
        return body

    @property
    def max_budget(self) -> int:
        return self.config.max_budget or self.budget_range.max

    def log_request(self, **entry: Any) -> None:
        if self.config.request_log:
            with open(self.config.request_log, "a", encoding="utf-8") as log:
                log.write(json.dumps({"time": round(time.time(), 3), **entry}, ensure_ascii=False) + "\n")
