"""The routes of ``tale serve`` (``tale.serve.gateway`` holds its pieces) and the app built from an ONNX export."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from predictor.allocate import ALLOCATIONS, greedy, proportional
from reasoner.errors import InputError
from tale.serve.config import _FORWARDED_HEADERS, BUDGET_HEADER, WRAP_UP, GatewayConfig
from tale.serve.gateway import (
    Gateway,
    RequestError,
    apply_policy,
    check_chat_body,
    error_response,
    last_user_text,
    requested_budget,
)
from tale.serve.upstreams import direct_prompt, thinking_fields


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        body = await gateway.read_json(request)
        messages = check_chat_body(body)
        own = requested_budget(request.headers.get(BUDGET_HEADER), f"header {BUDGET_HEADER}", gateway.max_budget)
        in_body = requested_budget(body.pop("tale_budget", None), "field 'tale_budget'", gateway.max_budget)
        own = own if in_body is None else in_body  # the body's field wins over the header; 0 is a budget
    except RequestError as error:
        gateway.metrics.requests.labels("chat", "too_large" if error.status == 413 else "bad_request").inc()
        return error_response(error.status, str(error))
    found = last_user_text(messages)
    if found is None or own == "off":
        return await forward(gateway, request, body, None, {})
    index, question = found
    if isinstance(own, int):
        budget, source = own, "request"
    else:
        [estimate] = await gateway.estimates([question])
        budget, source = gateway.budget(estimate), "estimate"
    gateway.log_request(question=question, budget=budget, source=source)
    config = gateway.config
    info = {"budget": budget, "source": source, "policy": config.policy, "risk": config.risk, "upstream_kind": config.upstream_kind,
            "route": "direct" if budget == 0 else "vanilla" if budget is None else "reason"}
    if gateway.rungs:
        info["curve_policy"] = config.curve_policy
    if budget is None:  # the curve policy's top rung: the request goes as the client sent it
        return await forward(gateway, request, body, None, {**info, "fields": []})
    gateway.metrics.budgets.observe(budget)
    if config.upstream_kind == "openai-compatible":
        forwarded = direct_prompt(body, index) if budget == 0 else apply_policy(body, index, budget, config.policy, config.slack)
        info["fields"] = ["messages"] if budget == 0 else [*(["messages"] if config.policy != "cap" else []),
                                                            *(["max_tokens"] if config.policy != "prompt" else [])]
    else:
        forwarded, info["fields"] = thinking_fields(body, config.upstream_kind, budget, config.answer_reserve)
    return await forward(gateway, request, forwarded, budget, info)


async def forward(gateway: Gateway, request: Request, body: dict[str, Any], budget: int | None,
                  info: dict[str, Any]) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_HEADERS}
    headers["Content-Type"] = "application/json"
    extra = {BUDGET_HEADER: str(budget)} if budget is not None else {}
    started = time.perf_counter()
    try:
        response = await gateway.client.post(gateway.chat_url, data=json.dumps(body).encode(), headers=headers)
    except asyncio.TimeoutError:
        return upstream_failure(gateway, 504, "timeout", f"the upstream did not answer within {gateway.config.timeout_s:g} s")
    except aiohttp.ClientError as error:
        return upstream_failure(gateway, 502, "unreachable", f"the upstream is unreachable ({type(error).__name__})")
    gateway.metrics.upstream_seconds.observe(time.perf_counter() - started)
    if response.status >= 400:
        try:
            text = (await response.read()).decode("utf-8", "replace")[:2000]
        except (asyncio.TimeoutError, aiohttp.ClientError):
            text = ""
        finally:
            response.release()
        retry = {"Retry-After": response.headers["retry-after"]} if "retry-after" in response.headers else {}
        failure = upstream_failure(gateway, response.status, str(response.status),
                                   f"the upstream returned HTTP {response.status}", upstream_body=text)
        failure.headers.update({**retry, **extra})
        return failure
    if body.get("stream"):
        return StreamingResponse(relay(gateway, response), status_code=response.status, headers=extra,
                                 media_type=response.headers.get("content-type", "text/event-stream"))
    try:
        data = await response.read()
    except asyncio.TimeoutError:
        return upstream_failure(gateway, 504, "timeout", "the upstream's response stalled")
    except aiohttp.ClientError:
        return upstream_failure(gateway, 502, "unreachable", "the upstream closed the connection mid-response")
    finally:
        response.release()
    try:
        payload = json.loads(data)
    except ValueError:
        return upstream_failure(gateway, 502, "bad_body", "the upstream's response is not JSON")
    if gateway.config.graceful_cut and budget and isinstance(payload, dict) and _cut(payload):
        payload = await wrap_up(gateway, headers, body, payload, info)
    if info and isinstance(payload, dict):
        payload["tale"] = info
    gateway.metrics.requests.labels("chat", "ok" if info else "passthrough").inc()
    return JSONResponse(payload, status_code=response.status, headers=extra)


def _cut(payload: dict[str, Any]) -> bool:
    """Whether the reply's first choice was cut by the token cap with text in it."""
    choices = payload.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = first.get("message") if isinstance(first.get("message"), dict) else {}
    return first.get("finish_reason") == "length" and isinstance(message.get("content"), str)


async def wrap_up(gateway: Gateway, headers: dict[str, str], body: dict[str, Any], payload: dict[str, Any],
                  info: dict[str, Any]) -> dict[str, Any]:
    """The graceful cut: ask once more, with the cut reply as the assistant's turn and ``WRAP_UP`` after it, for at most
    ``answer_reserve`` tokens without thinking, and join the answer to the cut reply (usage summed). A failed follow-up
    leaves the cut reply as it was."""
    config = gateway.config
    message = payload["choices"][0]["message"]
    follow = {k: v for k, v in body.items() if k not in ("max_tokens", "max_completion_tokens", "thinking_token_budget")}
    if isinstance(follow.get("chat_template_kwargs"), dict):
        follow["chat_template_kwargs"] = {k: v for k, v in follow["chat_template_kwargs"].items() if k != "thinking_budget"}
    follow["messages"] = [*body["messages"], {"role": "assistant", "content": message["content"]},
                          {"role": "user", "content": WRAP_UP}]
    if config.upstream_kind != "openai-compatible":
        follow, _ = thinking_fields(follow, config.upstream_kind, 0, config.answer_reserve)
    follow["max_completion_tokens" if config.upstream_kind == "openai" else "max_tokens"] = max(1, config.answer_reserve)
    try:
        async with gateway.client.post(gateway.chat_url, data=json.dumps(follow).encode(), headers=headers) as response:
            answer = await response.json(content_type=None) if response.status < 400 else None
        text = answer["choices"][0]["message"]["content"]
        if not isinstance(text, str):
            raise TypeError
    except (asyncio.TimeoutError, aiohttp.ClientError, ValueError, LookupError, TypeError):
        info["graceful_cut"] = {"applied": False, "why": "the follow-up request failed"}
        return payload
    payload = copy.deepcopy(payload)
    first = payload["choices"][0]
    first["message"]["content"] = f"{message['content']}\n{text}"
    first["finish_reason"] = answer["choices"][0].get("finish_reason", "stop")
    usage, extra = payload.get("usage"), answer.get("usage") or {}
    if isinstance(usage, dict):
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if isinstance(usage.get(key), int) and isinstance(extra.get(key), int):
                usage[key] += extra[key]
    info["graceful_cut"] = {"applied": True, "answer_tokens": extra.get("completion_tokens")}
    return payload


def upstream_failure(gateway: Gateway, status: int, label: str, message: str, **extra: Any) -> JSONResponse:
    """``label``: the upstream's HTTP status as text, or what went wrong (timeout, unreachable, bad_body)."""
    gateway.metrics.upstream_errors.labels(label).inc()
    gateway.metrics.requests.labels("chat", "upstream_error").inc()
    if label.isdigit():
        extra["upstream_status"] = status
    return error_response(status, message, "upstream_error", **extra)


async def relay(gateway: Gateway, response: aiohttp.ClientResponse):
    """The upstream's stream, chunk by chunk; closing it (the client left) closes the upstream connection."""
    outcome = "client_disconnect"
    try:
        async for chunk in response.content.iter_any():
            yield chunk
        outcome = "ok"
    except asyncio.TimeoutError:
        outcome = "upstream_error"
        gateway.metrics.upstream_errors.labels("timeout").inc()
        yield b'data: {"error": {"message": "the upstream stream stalled", "type": "upstream_error"}}\n\n'
    except aiohttp.ClientError:
        outcome = "upstream_error"
        gateway.metrics.upstream_errors.labels("unreachable").inc()
        yield b'data: {"error": {"message": "the upstream closed the stream", "type": "upstream_error"}}\n\n'
    finally:
        gateway.metrics.requests.labels("chat_stream", outcome).inc()
        if outcome == "ok":
            response.release()  # the connection goes back to the pool
        else:
            response.close()  # a client that left, or a broken stream: the upstream sees its connection close


async def budgets(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        body = await gateway.read_json(request)
        questions, total, allocation, factor = check_budgets_body(body, gateway)
    except RequestError as error:
        gateway.metrics.requests.labels("budgets", "too_large" if error.status == 413 else "bad_request").inc()
        return error_response(error.status, str(error))
    estimates = await gateway.estimates(questions) if questions else []
    result: dict[str, Any] = {"risk": body.get("risk", gateway.config.risk),
                              "estimates": [None if math.isinf(e) else round(e, 2) for e in estimates]}  # inf: a vanilla rung
    if total is None:
        result["budgets"] = [gateway.budget(e, factor) for e in estimates]
    else:
        try:
            chosen = (greedy(estimates, gateway.scores, total, gateway.budget_range) if allocation == "greedy"
                      else proportional([e * factor for e in estimates], total, gateway.budget_range))
        except ValueError as error:
            gateway.metrics.requests.labels("budgets", "bad_request").inc()
            return error_response(400, f"field 'total': {error}")
        result |= {"budgets": chosen.budgets, "total": chosen.total, "allocation": allocation,
                   "expected_coverage": None if chosen.expected_coverage is None else round(chosen.expected_coverage, 4)}
    gateway.metrics.requests.labels("budgets", "ok").inc()
    return JSONResponse(result)


def check_budgets_body(body: Any, gateway: Gateway) -> tuple[list[str], int | None, str, float]:
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    questions = body.get("questions")
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise RequestError(400, "field 'questions': must be a list of strings")
    if len(questions) > gateway.config.max_questions:
        raise RequestError(413, f"field 'questions': {len(questions)} questions, over the limit of {gateway.config.max_questions} "
                                "per request (--max-questions); send them in several requests")
    total = body.get("total")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 1):
        raise RequestError(400, f"field 'total': must be a positive integer, got {total!r}")
    if total is not None and gateway.rungs:
        raise RequestError(400, f"field 'total': this gateway's curve policy ({gateway.config.curve_policy}) chooses each "
                                "question's rung on its own; send the questions without a total")
    factor = gateway.factor
    if "risk" in body:
        risk = body["risk"]
        if risk is None:
            factor = 1.0
        elif isinstance(risk, bool) or not isinstance(risk, (int, float)) or not 0 < risk < 1:
            raise RequestError(400, f"field 'risk': must be a number in (0, 1) or null, got {risk!r}")
        elif gateway.calibration is None:
            raise RequestError(400, "field 'risk': this predictor has no calibration")
        else:
            try:
                factor = gateway.calibration.factor(risk)
            except ValueError as error:
                raise RequestError(400, f"field 'risk': {error}") from None
    allocation = body.get("allocation", "greedy" if gateway.scores else "proportional")
    if allocation not in ALLOCATIONS:
        raise RequestError(400, f"field 'allocation': must be one of {ALLOCATIONS}, got {allocation!r}")
    if allocation == "greedy" and total is not None and not gateway.scores:
        raise RequestError(400, "field 'allocation': greedy needs a calibrated predictor; use proportional")
    return questions, total, allocation, factor


async def healthz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return JSONResponse({"status": "ok", "predictor": gateway.name, "upstream": gateway.config.upstream,
                         "policy": gateway.config.policy, "risk": gateway.config.risk})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(gateway: Gateway) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await gateway.startup()
        yield
        await gateway.shutdown()

    app = Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"]),
                            Route("/v1/budgets", budgets, methods=["POST"]),
                            Route("/healthz", healthz, methods=["GET"]),
                            Route("/metrics", metrics, methods=["GET"])], lifespan=lifespan)
    app.state.gateway = gateway
    return app


def load_gateway(predictor: Path, config: GatewayConfig) -> Gateway:
    """A gateway over the export in ``predictor`` (the BERT regressor's ONNX export, run at ``config.precision``
    with ``config.threads``, or a TF-IDF linear export), calibrated at ``config.risk`` where one is asked. A linear
    export needs no threads and no precision: it is a dot product per question. A BERT curve estimator's ONNX export
    gives each question a rung through ``config.curve_policy`` instead (``_curve_gateway``)."""
    from export.load import ONNX, ONNX_CURVES, directory_kind, load_any
    from export.manifest import RuntimeConfig

    kind = directory_kind(predictor)
    if kind not in (ONNX, ONNX_CURVES, "tfidf-linear"):
        raise InputError(f"{predictor}: tale serve takes an ONNX export (of the regressor or of the BERT curve estimator) or a "
                         f"TF-IDF linear export (tale export), not {kind or 'this'}")
    if kind == ONNX_CURVES:
        return _curve_gateway(predictor, config)
    if config.curve_policy is not None:
        raise InputError(f"--curve-policy needs a curve estimator's ONNX export as --predictor; {predictor} is {kind}")
    estimator = load_any(predictor, RuntimeConfig(precision=config.precision, threads=config.threads) if kind == ONNX else RuntimeConfig())
    inline = kind != ONNX  # a dot product per question: answered on the event loop
    budget_range = estimator.manifest.budget_range if kind == ONNX else estimator.budget_range
    return Gateway(config, estimator.predict_float, budget_range, estimator.calibration, str(predictor), inline=inline)


def _curve_gateway(predictor: Path, config: GatewayConfig) -> Gateway:
    """A gateway whose estimates are rungs: each question's curve predicted by the exported curve estimator, its rung
    chosen by ``config.curve_policy`` (0: answer directly, N: budget N, the top rung: vanilla, sent as infinity)."""
    from export.manifest import RuntimeConfig
    from export.runtime import OnnxCurves
    from predictor import BudgetRange
    from predictor.policies import parse_policy

    if config.curve_policy is None:
        raise InputError(f"{predictor} is a curve estimator: choose how its curves become budgets with --curve-policy "
                         "price=LAMBDA (e.g. price=0.002) or target=SHARE")
    if config.risk is not None:
        raise InputError("--risk calibrates a budget regressor; a curve estimator's policy has no risk")
    curves = OnnxCurves.load(predictor, RuntimeConfig(precision=config.precision, threads=config.threads))
    policy = parse_policy(config.curve_policy)

    def rungs(questions: list[str]) -> list[float]:
        predicted = curves.curves(questions)
        chosen = [c.rungs[i] for c, i in zip(predicted, policy.choose(predicted))]
        return [math.inf if rung is None else float(rung) for rung in chosen]

    return Gateway(config, rungs, BudgetRange(), None, str(predictor), rungs=True)
