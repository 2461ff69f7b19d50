"""``tale serve`` as a subprocess on 127.0.0.1 in front of real upstreams: ``transformers serve`` on a tiny
model, and a scripted server (tests/upstream_server.py) that echoes requests or fails on purpose."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port, server_process, transformers_serve
from test_calibrate import calibrated_dirs  # noqa: F401  (fixture: a calibrated tiny regressor and its ONNX export)

TALE = str(Path(sys.executable).with_name("tale"))
UPSTREAM = str(Path(__file__).with_name("upstream_server.py"))
QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
TOKEN = "sk-test-secret-4242"


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    directory = tmp_path_factory.mktemp("upstream")
    port, events = free_port(), directory / "events.txt"
    with server_process([sys.executable, UPSTREAM, str(port), str(events)], f"http://127.0.0.1:{port}/health", directory / "log"):
        yield f"http://127.0.0.1:{port}/v1", events


@contextlib.contextmanager
def gateway(onnx_dir: Path, upstream: str, log: Path, *options: str) -> Iterator[str]:
    port = free_port()
    command = [TALE, "serve", "--predictor", str(onnx_dir), "--upstream", upstream, "--port", str(port), "-v", *options]
    with server_process(command, f"http://127.0.0.1:{port}/healthz", log):
        yield f"http://127.0.0.1:{port}"


def expected_budget(onnx_dir: Path, question: str, risk: float | None) -> int:
    from export.manifest import RuntimeConfig
    from export.runtime import OnnxEstimator
    from predictor.calibrate import Calibrated

    estimator = OnnxEstimator.load(onnx_dir, RuntimeConfig(precision="fp32", threads=1))  # the gateway's default
    chosen = Calibrated(estimator, estimator.calibration, risk) if risk else estimator
    return chosen.predict([question])[0]


def echoed(response: httpx.Response) -> dict:
    return json.loads(response.json()["choices"][0]["message"]["content"])


def chat(content="What is 6 * 7?", model="echo", **fields) -> dict:
    return {"model": model, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
            **fields}


def test_each_policy_and_the_overrides(calibrated_dirs, scripted, tmp_path: Path) -> None:  # noqa: F811
    _, onnx_dir = calibrated_dirs
    upstream, _ = scripted
    budget = expected_budget(onnx_dir, QUESTION, 0.5)
    line = f"Let's think step by step and use less than {budget} tokens:"
    with contextlib.ExitStack() as stack:
        bases = {policy: stack.enter_context(gateway(onnx_dir, upstream, tmp_path / f"{policy}.log", "--policy", policy,
                                                     "--risk", "0.5", "--slack", "1.5"))
                 for policy in ("prompt", "cap", "both")}
        for policy, base in bases.items():
            response = httpx.post(f"{base}/v1/chat/completions", json=chat(QUESTION), timeout=30)
            assert response.status_code == 200, response.text
            assert response.headers["X-TALE-Budget"] == str(budget)
            fields = {"prompt": ["messages"], "cap": ["max_tokens"], "both": ["messages", "max_tokens"]}[policy]
            assert response.json()["tale"] == {"budget": budget, "source": "estimate", "policy": policy, "risk": 0.5,
                                               "upstream_kind": "openai-compatible", "route": "reason", "fields": fields}
            seen = echoed(response)
            user = seen["messages"][-1]["content"]
            assert user == (f"{QUESTION}\n{line}" if policy != "cap" else QUESTION)
            assert seen["messages"][0] == {"role": "system", "content": "Be brief."}
            assert seen["max_tokens"] == (math.ceil(budget * 1.5) if policy != "prompt" else None)

        base = bases["both"]
        own = httpx.post(f"{base}/v1/chat/completions", json=chat(QUESTION, tale_budget=77), timeout=30)
        assert own.json()["tale"]["source"] == "request" and own.headers["X-TALE-Budget"] == "77"
        assert echoed(own)["max_tokens"] == math.ceil(77 * 1.5) and "tale_budget" not in echoed(own)["keys"]
        smaller = httpx.post(f"{base}/v1/chat/completions", json=chat(QUESTION, max_completion_tokens=5), timeout=30)
        assert echoed(smaller)["max_completion_tokens"] == 5 and echoed(smaller)["max_tokens"] is None
        off = httpx.post(f"{base}/v1/chat/completions", json=chat(QUESTION), headers={"X-TALE-Budget": "off"}, timeout=30)
        assert "X-TALE-Budget" not in off.headers and "tale" not in off.json()
        assert echoed(off)["messages"][-1]["content"] == QUESTION and echoed(off)["max_tokens"] is None
        system_only = {"model": "echo", "messages": [{"role": "system", "content": "hello"}]}
        passed = httpx.post(f"{base}/v1/chat/completions", json=system_only, timeout=30)
        assert passed.status_code == 200 and echoed(passed)["messages"] == system_only["messages"]
        parts = chat([{"type": "text", "text": QUESTION}])
        listed = echoed(httpx.post(f"{base}/v1/chat/completions", json=parts, timeout=30))["messages"][-1]["content"]
        assert listed == [{"type": "text", "text": QUESTION}, {"type": "text", "text": line}]

        streamed = httpx.post(f"{base}/v1/chat/completions", json=chat(QUESTION, stream=True), timeout=30)
        assert streamed.headers["X-TALE-Budget"] == str(budget)
        assert streamed.headers["content-type"].startswith("text/event-stream")
        text = "".join(json.loads(event[len("data: "):])["choices"][0]["delta"]["content"]
                       for event in streamed.text.split("\n\n") if event.startswith("data: {"))
        assert json.loads(text)["messages"][-1]["content"] == f"{QUESTION}\n{line}"

        metrics = httpx.get(f"{base}/metrics").text
        assert "tale_estimate_cache_hits_total 3.0" in metrics  # QUESTION estimated once, then remembered
        assert 'tale_requests_total{outcome="ok",route="chat"} 4.0' in metrics  # estimated, own, smaller cap, parts
        assert 'tale_requests_total{outcome="passthrough",route="chat"} 2.0' in metrics  # opted out, no user message
        assert 'tale_requests_total{outcome="ok",route="chat_stream"} 1.0' in metrics
        assert "tale_estimate_seconds_count" in metrics and "tale_budget_tokens_bucket" in metrics


def test_budgets_with_and_without_a_total(calibrated_dirs, scripted, tmp_path: Path) -> None:  # noqa: F811
    from test_predictor import synthetic

    _, onnx_dir = calibrated_dirs
    questions = [e.question for e in synthetic(20, seed=5)]
    with gateway(onnx_dir, scripted[0], tmp_path / "gw.log", "--risk", "0.2") as base:
        plain = httpx.post(f"{base}/v1/budgets", json={"questions": questions}, timeout=30).json()
        assert plain["budgets"] == [expected_budget(onnx_dir, q, 0.2) for q in questions] and plain["risk"] == 0.2
        other = httpx.post(f"{base}/v1/budgets", json={"questions": questions[:3], "risk": 0.5}, timeout=30).json()
        assert other["budgets"] == [expected_budget(onnx_dir, q, 0.5) for q in questions[:3]]
        total = sum(plain["budgets"]) // 2
        greedy = httpx.post(f"{base}/v1/budgets", json={"questions": questions, "total": total}, timeout=30).json()
        assert greedy["allocation"] == "greedy" and greedy["total"] <= total and 0 < greedy["expected_coverage"] < 1
        shared = httpx.post(f"{base}/v1/budgets", json={"questions": questions, "total": total,
                                                       "allocation": "proportional"}, timeout=30).json()
        assert shared["total"] <= total and shared["expected_coverage"] is None
        assert shared["budgets"] != greedy["budgets"]
        for body, field in (({"questions": "x"}, "questions"), ({"questions": ["a"], "total": 0}, "total"),
                            ({"questions": ["a"], "risk": 3}, "risk"), ({"questions": ["a"] * 3, "total": 5}, "total"),
                            ({"questions": ["a"], "allocation": "best"}, "allocation")):
            refused = httpx.post(f"{base}/v1/budgets", json=body, timeout=30)
            assert refused.status_code == 400 and f"field '{field}'" in refused.json()["error"]["message"]


def test_a_tfidf_linear_export_serves_its_calibrated_budgets(scripted, tmp_path: Path) -> None:
    """The torch-free TF-IDF export (tale export on a TF-IDF directory) behind the same routes."""
    from test_predictor import synthetic

    from export.linear import export_tfidf
    from predictor.baselines import TfidfRidgeEstimator
    from predictor.calibrate import fit
    from tale.eval.sources import build_estimator

    source = TfidfRidgeEstimator.fit(synthetic(80))
    source.save(tmp_path / "tfidf")
    held = synthetic(40, seed=11)
    fit(source, [e.question for e in held], [e.budget for e in held], name="tfidf").save(tmp_path / "tfidf")
    export_tfidf(tmp_path / "tfidf", tmp_path / "linear")
    questions = [e.question for e in synthetic(20, seed=5)]
    want = build_estimator(f"tfidf:{tmp_path / 'tfidf'}%0.2").predict(questions)
    assert len(set(want)) > 3
    with gateway(tmp_path / "linear", scripted[0], tmp_path / "gw.log", "--risk", "0.2") as base:
        assert httpx.post(f"{base}/v1/budgets", json={"questions": questions}, timeout=30).json()["budgets"] == want
        response = httpx.post(f"{base}/v1/chat/completions", json=chat(questions[0]), timeout=30)
        assert response.status_code == 200 and response.headers["X-TALE-Budget"] == str(want[0])
        assert echoed(response)["messages"][-1]["content"].endswith(f"use less than {want[0]} tokens:")
        metrics = httpx.get(f"{base}/metrics").text  # answered on the event loop, in chunks of max_batch // 4 = 8, counted as any
        assert "tale_estimate_seconds_count 3.0" in metrics and "tale_estimate_batch_questions_sum 20.0" in metrics
        assert "tale_estimate_cache_hits_total 1.0" in metrics  # the chat request's question was in the list


def test_faults_come_back_as_clear_errors(calibrated_dirs, scripted, tmp_path: Path) -> None:  # noqa: F811
    _, onnx_dir = calibrated_dirs
    upstream, events = scripted
    with gateway(onnx_dir, upstream, tmp_path / "gw.log", "--timeout", "1", "--max-body-bytes", "4000") as base:
        url = f"{base}/v1/chat/completions"
        failed = httpx.post(url, json=chat(model="status-500"), timeout=30)
        assert failed.status_code == 500 and failed.json()["error"]["type"] == "upstream_error"
        assert failed.json()["error"]["upstream_status"] == 500 and "scripted 500" in failed.json()["error"]["upstream_body"]
        limited = httpx.post(url, json=chat(model="status-429"), timeout=30)
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
        # The gateway's own --timeout (1 s) answered, not the client's 30 s (which would raise here).
        hung = httpx.post(url, json=chat(model="hang"), timeout=30)
        assert hung.status_code == 504 and "did not answer within 1 s" in hung.text
        bad = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}, timeout=30)
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
        wrong = httpx.post(url, json={"model": "echo", "messages": [{"content": "hi"}]}, timeout=30)
        assert wrong.status_code == 400 and "field 'messages[0].role'" in wrong.json()["error"]["message"]
        big = httpx.post(url, json=chat("x" * 5000), timeout=30)
        assert big.status_code == 413

        with httpx.stream("POST", url, json=chat(model="slow", stream=True), timeout=30) as stream:
            for _ in zip(range(3), stream.iter_raw()):
                pass  # a few chunks, then the client goes away
        deadline = time.monotonic() + 10
        while "cancelled" not in (events.read_text() if events.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "cancelled" in events.read_text()  # the upstream saw its request closed

        secret = httpx.post(url, json=chat(), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert echoed(secret)["authorization"] == f"Bearer {TOKEN}"  # forwarded
        metrics = httpx.get(f"{base}/metrics").text
        for status in ("500", "429", "timeout"):
            assert f'tale_upstream_errors_total{{status="{status}"}} 1.0' in metrics
        assert 'tale_requests_total{outcome="client_disconnect",route="chat_stream"} 1.0' in metrics
        assert 'tale_requests_total{outcome="bad_request",route="chat"} 2.0' in metrics
        assert 'tale_requests_total{outcome="too_large",route="chat"} 1.0' in metrics
    assert TOKEN not in (tmp_path / "gw.log").read_text()  # verbose logs, never the key
    assert not list(tmp_path.glob("*.jsonl"))  # no request log unless asked

    dead = free_port()  # nothing listens here: a killed upstream
    with gateway(onnx_dir, f"http://127.0.0.1:{dead}/v1", tmp_path / "dead.log", "--request-log",
                 str(tmp_path / "requests.jsonl")) as base:
        gone = httpx.post(f"{base}/v1/chat/completions", json=chat(QUESTION), timeout=30)
        assert gone.status_code == 502 and "unreachable" in gone.json()["error"]["message"]
    [logged] = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert logged["question"] == QUESTION and logged["source"] == "estimate"


def test_in_front_of_transformers_serve_with_the_openai_client(calibrated_dirs, tiny_lm_dir: Path,  # noqa: F811
                                                                tmp_path: Path) -> None:
    from openai import OpenAI

    _, onnx_dir = calibrated_dirs
    with transformers_serve(tiny_lm_dir, tmp_path / "serve.log") as upstream, \
            gateway(onnx_dir, upstream, tmp_path / "gw.log", "--policy", "both", "--risk", "0.5") as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=str(tiny_lm_dir), messages=[{"role": "user", "content": QUESTION}], temperature=0)
        budget = int(raw.headers["X-TALE-Budget"])
        completion = raw.parse()
        assert budget == expected_budget(onnx_dir, QUESTION, 0.5) and completion.model_extra["tale"]["budget"] == budget
        assert 1 <= completion.usage.completion_tokens <= budget  # the cap, enforced by the upstream
        stream = client.chat.completions.create(model=str(tiny_lm_dir), messages=[{"role": "user", "content": QUESTION}],
                                                temperature=0, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == completion.choices[0].message.content  # greedy: the same answer, streamed


def test_bad_bodies_and_limits_are_clear_errors_and_the_gateway_keeps_serving(calibrated_dirs, scripted, tmp_path: Path) -> None:  # noqa: F811
    _, onnx_dir = calibrated_dirs
    with gateway(onnx_dir, scripted[0], tmp_path / "gw.log", "--max-questions", "5", "--max-budget", "600") as base:
        url = f"{base}/v1/chat/completions"
        deep = b"[" * 100_000 + b"]" * 100_000  # 200 KB, under the body limit
        response = httpx.post(url, content=deep, headers={"content-type": "application/json"}, timeout=30)
        assert response.status_code == 400 and "nested more than 32 levels deep" in response.json()["error"]["message"]
        nested: object = "x"
        for _ in range(40):
            nested = [nested]
        response = httpx.post(url, json=chat(metadata=nested), timeout=30)
        assert response.status_code == 400 and "nested more than 32 levels deep" in response.text
        for huge in (1e30, float("inf"), 601):
            response = httpx.post(url, content=json.dumps(chat(tale_budget=huge)), headers={"content-type": "application/json"}, timeout=30)
            assert response.status_code == 400, huge
            assert "above the largest budget this gateway takes (600, --max-budget)" in response.json()["error"]["message"]
        assert httpx.post(url, json=chat(tale_budget=600), timeout=30).headers["X-TALE-Budget"] == "600"  # the limit itself is fine
        response = httpx.post(f"{base}/v1/budgets", json={"questions": ["q"] * 6}, timeout=30)
        assert response.status_code == 413 and "6 questions, over the limit of 5 per request (--max-questions)" in response.text
        assert httpx.post(f"{base}/v1/budgets", json={"questions": ["q"] * 5}, timeout=30).status_code == 200
        ok = httpx.post(url, json=chat(QUESTION), timeout=30)
        assert ok.status_code == 200 and echoed(ok)["messages"][-1]["content"].startswith(QUESTION)  # still serving
        metrics = httpx.get(f"{base}/metrics").text
        assert 'tale_requests_total{outcome="bad_request",route="chat"} 5.0' in metrics
    assert "Traceback" not in (tmp_path / "gw.log").read_text()


def test_a_long_budgets_list_is_estimated_between_chat_requests() -> None:
    """The estimator sees a budgets list max_batch questions at a time; a chat request that arrives after the list
    was sent is estimated before the list's last chunk, not after all of it."""
    import asyncio

    from predictor import BudgetRange
    from tale.serve.config import GatewayConfig
    from tale.serve.gateway import Gateway

    calls: list[list[str]] = []

    def estimate(questions: list[str]) -> list[float]:
        calls.append(list(questions))
        time.sleep(0.01)  # an estimator that takes a while, so the chat request arrives during the list
        return [10.0] * len(questions)

    async def scenario() -> None:
        gw = Gateway(GatewayConfig(upstream="http://127.0.0.1:9/v1", max_batch=4, window_ms=0), estimate, BudgetRange())
        gw.batcher.start()
        try:
            listing = asyncio.create_task(gw.estimates([f"list {i}" for i in range(16)]))
            while not calls:  # the list's first chunk is with the estimator
                await asyncio.sleep(0.001)
            await gw.estimates(["chat"])
            await listing
        finally:
            await gw.batcher.stop()

    asyncio.run(scenario())
    assert all(len(batch) <= 4 for batch in calls)
    chat_call = next(i for i, batch in enumerate(calls) if "chat" in batch)
    last_list_call = max(i for i, batch in enumerate(calls) if any(q.startswith("list") for q in batch))
    assert chat_call < last_list_call, calls


@pytest.mark.parametrize("kind", ["vllm", "openai", "anthropic-compat", "gemini-compat", "openrouter", "sglang", "llama.cpp",
                                  "openai-compatible"])
def test_each_upstream_kind_is_sent_the_exact_body_and_budget_0_skips_thinking(kind: str, calibrated_dirs, scripted,  # noqa: F811
                                                                                 tmp_path: Path) -> None:
    from tale.serve.upstreams import direct_prompt, thinking_fields

    _, onnx_dir = calibrated_dirs
    sent = chat(QUESTION, max_tokens=50)
    with gateway(onnx_dir, scripted[0], tmp_path / "gw.log", "--upstream-kind", kind, "--answer-reserve", "100") as base:
        url = f"{base}/v1/chat/completions"
        for budget in (300, 0):
            response = httpx.post(url, json={**sent, "tale_budget": budget}, timeout=30)
            assert response.status_code == 200, response.text
            received = echoed(response)["body"]
            tale = response.json()["tale"]
            assert tale["upstream_kind"] == kind and tale["route"] == ("direct" if budget == 0 else "reason")
            if kind == "openai-compatible":  # today's behaviour: the policy (both) with budget N, the direct prompt at 0
                if budget:
                    assert received["messages"][-1]["content"].endswith("use less than 300 tokens:") and received["max_tokens"] == 50
                else:
                    assert received == direct_prompt(sent, 1)
            else:
                want, fields = thinking_fields(sent, kind, budget, 100)
                assert received == want and tale["fields"] == fields
                assert received["messages"] == sent["messages"]  # the question is sent as it came


def test_auto_says_what_it_guessed_and_uses_it(calibrated_dirs, scripted, tmp_path: Path) -> None:  # noqa: F811
    _, onnx_dir = calibrated_dirs
    with gateway(onnx_dir, scripted[0], tmp_path / "gw.log", "--upstream-kind", "auto") as base:
        response = httpx.post(f"{base}/v1/chat/completions", json=chat(QUESTION, tale_budget=200), timeout=30)
        assert response.json()["tale"]["upstream_kind"] == "vllm" and echoed(response)["body"]["thinking_token_budget"] == 200
    assert "--upstream-kind auto: vllm (from /v1/models says owned_by 'vllm')" in (tmp_path / "gw.log").read_text()


@pytest.mark.parametrize("kind", ["openai-compatible", "vllm"])
def test_the_graceful_cut_asks_for_the_answer_after_a_cut_reply(kind: str, calibrated_dirs, scripted, tmp_path: Path) -> None:  # noqa: F811
    from tale.serve.config import WRAP_UP

    _, onnx_dir = calibrated_dirs
    sent = chat(QUESTION, model="cut", tale_budget=40)
    with gateway(onnx_dir, scripted[0], tmp_path / "cut.log", "--upstream-kind", kind, "--answer-reserve", "100",
                 "--graceful-cut") as base, gateway(onnx_dir, scripted[0], tmp_path / "plain.log", "--upstream-kind", kind) as plain:
        response = httpx.post(f"{base}/v1/chat/completions", json=sent, timeout=30)
        assert response.status_code == 200, response.text
        reply = response.json()
        cut, _, answer = reply["choices"][0]["message"]["content"].partition("\n")
        assert cut == "Let me think: 6 times 7 is" and reply["choices"][0]["finish_reason"] == "stop"
        follow = json.loads(answer)["body"]  # what the follow-up asked: the cut reply, then the wrap-up line
        assert follow["messages"][-2:] == [{"role": "assistant", "content": cut}, {"role": "user", "content": WRAP_UP}]
        assert follow["max_tokens"] == 100 and "thinking_token_budget" not in follow
        first_cap = 40 + 100 if kind == "vllm" else 40  # vllm: thinking budget + reserve; openai-compatible: the policy's cap
        assert reply["usage"]["completion_tokens"] == first_cap + 5
        if kind == "vllm":
            assert follow["chat_template_kwargs"] == {"enable_thinking": False}
        assert reply["tale"]["graceful_cut"] == {"applied": True, "answer_tokens": 5}
        untouched = httpx.post(f"{plain}/v1/chat/completions", json=sent, timeout=30).json()  # off by default
        assert untouched["choices"][0]["finish_reason"] == "length" and "graceful_cut" not in untouched["tale"]


def test_a_curve_policy_routes_each_question_to_its_rung(scripted, tmp_path: Path, tiny_bert_dir: Path) -> None:
    import subprocess

    from test_bert_curves import EASY, HARD, ladder_data, tiny_curves_config

    from export.manifest import RuntimeConfig
    from export.onnx import ExportConfig, export_curves
    from export.runtime import OnnxCurves
    from predictor.bert_curves import BertCurves
    from predictor.policies import parse_policy
    from tale.serve.upstreams import direct_prompt

    BertCurves.fit(ladder_data(), tiny_curves_config(tiny_bert_dir)).save(tmp_path / "curves")
    export_curves(tmp_path / "curves", tmp_path / "onnx", ExportConfig())
    curves = OnnxCurves.load(tmp_path / "onnx", RuntimeConfig(precision="fp32", threads=1))
    questions = [EASY.format(i=3), HARD.format(i=3)]
    routes = set()
    for setting in ("price=0", "price=1"):
        predicted = curves.curves(questions)
        rungs = [c.rungs[i] for c, i in zip(predicted, parse_policy(setting).choose(predicted))]
        with gateway(tmp_path / "onnx", scripted[0], tmp_path / f"{setting}.log", "--curve-policy", setting) as base:
            for question, rung in zip(questions, rungs):
                sent = chat(question)
                response = httpx.post(f"{base}/v1/chat/completions", json=sent, timeout=30)
                assert response.status_code == 200, response.text
                tale, received = response.json()["tale"], echoed(response)["body"]
                route = "direct" if rung == 0 else "vanilla" if rung is None else "reason"
                routes.add(route)
                assert tale["route"] == route and tale["budget"] == rung and tale["curve_policy"] == setting
                if route == "direct":
                    assert received == direct_prompt(sent, 1)
                elif route == "vanilla":
                    assert received == sent and "X-TALE-Budget" not in response.headers
                else:
                    assert received["messages"][-1]["content"].endswith(f"use less than {rung} tokens:")
            listed = httpx.post(f"{base}/v1/budgets", json={"questions": questions}, timeout=30).json()
            assert listed["budgets"] == rungs
            total = httpx.post(f"{base}/v1/budgets", json={"questions": questions, "total": 100}, timeout=30)
            assert total.status_code == 400 and "chooses each question's rung on its own" in total.text
    assert {"direct", "vanilla"} <= routes  # price 1 buys nothing above the cheapest rung; price 0 the likeliest, here vanilla
    refused = subprocess.run([TALE, "serve", "--predictor", str(tmp_path / "onnx"), "--upstream", scripted[0]],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "choose how its curves become budgets with --curve-policy" in refused.stderr
