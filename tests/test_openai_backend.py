"""The OpenAI-compatible backend against real servers on 127.0.0.1: ``transformers serve`` with the
tiny model, and a scripted HTTP server for retries, errors and the API key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import free_port, transformers_serve

from reasoner.backends.openai import BackendError, OpenAIBackend, OpenAIConfig
from reasoner.prompts import Prompt, reasoning_prompt

PROMPTS = [
    reasoning_prompt("What is 2 + 3?"),
    reasoning_prompt("Natalia sold 48 clips in April and half as many in May. How many in total?"),
    Prompt(user="What is 7 * 6?", system="You are a careful math tutor."),
]


@pytest.fixture(scope="module")
def served_model(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``transformers serve`` pinned to the tiny model: (base_url, served model name)."""
    with transformers_serve(tiny_lm_dir, tmp_path_factory.mktemp("serve") / "serve.log") as base_url:
        yield base_url, str(tiny_lm_dir)


def test_transformers_serve_counts_match_the_tokenizer(served_model: tuple[str, str], tiny_lm_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_url, model_name = served_model
    with OpenAIBackend(OpenAIConfig(model=model_name, base_url=base_url, concurrency=2)) as backend:
        out = backend.generate(PROMPTS, max_new_tokens=6)
    assert backend.name == model_name
    assert len(out) == len(PROMPTS)

    # The same model, greedy, one prompt at a time: what the server must have produced, in order.
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    for prompt, generation in zip(PROMPTS, out):
        inputs = tokenizer.apply_chat_template(
            prompt.messages(), add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        with torch.inference_mode():
            sequence = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        generated = sequence[0, inputs["input_ids"].shape[1] :]
        assert generation.prompt_tokens == inputs["input_ids"].shape[1] > 0
        assert 1 <= generation.output_tokens <= 6
        assert generation.output_tokens == len(generated)
        assert generation.finish_reason == ("length" if len(generated) == 6 else "stop")
        assert generation.text == tokenizer.decode(generated, skip_special_tokens=True).strip()


# ---- a scripted server: each request gets the next scripted reply, the last one repeats ----

Reply = tuple[int, dict[str, str], object]  # status, headers, JSON body (or text)


def completion(content: str = "The answer is [[5]].", usage: dict | None = None) -> Reply:
    body = {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18} if usage is None else usage,
    }
    return 200, {}, body


class ScriptedServer:
    def __init__(self, script: list[Reply] | Callable[[dict], Reply]) -> None:
        self.script = script
        self.requests: list[tuple[dict[str, str], dict]] = []  # (headers, JSON body) as received
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _reply(self, headers: dict[str, str], body: dict) -> Reply:
        with self._lock:
            self.requests.append((headers, body))
            n = len(self.requests)
        if callable(self.script):
            return self.script(body)
        return self.script[min(n, len(self.script)) - 1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, headers, payload = server._reply(dict(self.headers.items()), body)
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: list[Reply] | Callable[[dict], Reply]) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def backend_for(server: ScriptedServer, **overrides: object) -> OpenAIBackend:
    options = {"model": "tiny", "base_url": server.base_url, "backoff_s": 0.001, "api_key_env": "TALE_TEST_KEY"}
    return OpenAIBackend(OpenAIConfig(**{**options, **overrides}))


def test_retries_5xx_then_succeeds(scripted) -> None:
    server = scripted([(503, {}, "overloaded"), (503, {}, "overloaded"), completion()])
    (generation,) = backend_for(server).generate([PROMPTS[0]], max_new_tokens=32)
    assert generation.text == "The answer is [[5]]."
    assert (generation.prompt_tokens, generation.output_tokens, generation.finish_reason) == (11, 7, "stop")
    assert len(server.requests) == 3
    body = server.requests[-1][1]
    assert body == {
        "model": "tiny", "messages": PROMPTS[0].messages(), "max_tokens": 32,
        "temperature": 0.0, "top_p": 1.0, "seed": 0,
    }  # fmt: skip


def test_gives_up_after_max_retries_naming_url_model_and_status(scripted) -> None:
    server = scripted([(500, {}, "boom: the worker died")])
    backend = backend_for(server, max_retries=2)
    with pytest.raises(BackendError) as error:
        backend.generate([PROMPTS[0]], max_new_tokens=8)
    message = str(error.value)
    assert f"{server.base_url}/chat/completions" in message
    assert "'tiny'" in message and "HTTP 500" in message and "boom: the worker died" in message
    assert "3 attempts" in message
    assert len(server.requests) == 3


def test_connection_errors_are_retried_then_fail() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = OpenAIBackend(OpenAIConfig(model="tiny", base_url=base_url, max_retries=1, backoff_s=0.001))
    with pytest.raises(BackendError, match="2 attempts.*ConnectError") as error:
        backend.generate([PROMPTS[0]], max_new_tokens=8)
    assert f"{base_url}/chat/completions (model 'tiny')" in str(error.value)


def test_unauthorized_fails_at_once_and_never_leaks_the_key(scripted, monkeypatch) -> None:
    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("TALE_TEST_KEY", key)
    server = scripted([(401, {}, {"error": {"message": f"Incorrect API key provided: {key}"}})])
    backend = backend_for(server)
    with pytest.raises(BackendError) as error:
        backend.generate(PROMPTS, max_new_tokens=8)
    assert "HTTP 401" in str(error.value) and "Incorrect API key" in str(error.value)
    assert key not in str(error.value)
    assert key not in repr(backend.config)
    assert 1 <= len(server.requests) <= len(PROMPTS)  # each prompt's request fails once, none retried
    assert all(headers["Authorization"] == f"Bearer {key}" for headers, _ in server.requests)


def test_no_key_in_the_environment_sends_no_authorization(scripted, monkeypatch) -> None:
    monkeypatch.delenv("TALE_TEST_KEY", raising=False)
    server = scripted([completion()])
    backend_for(server).generate([PROMPTS[0]], max_new_tokens=8)
    assert "Authorization" not in server.requests[0][0]


def test_rate_limit_honours_retry_after(scripted) -> None:
    server = scripted([(429, {"Retry-After": "3"}, "slow down"), (503, {}, "busy"), completion()])
    backend = backend_for(server, backoff_s=100.0)
    delays: list[float] = []
    backend._sleep = delays.append  # record the waits instead of waiting
    (generation,) = backend.generate([PROMPTS[0]], max_new_tokens=8)
    # Retry-After's 3 s, not the backoff (50-150 s, capped at 60); without the header, the capped backoff.
    assert delays == [3.0, 60.0]
    assert generation.output_tokens == 7
    assert len(server.requests) == 3


def test_concurrent_results_keep_prompt_order(scripted) -> None:
    def echo_slowly(body: dict) -> Reply:
        n = int(body["messages"][-1]["content"].split()[-1])
        time.sleep(0.02 * (5 - n))  # later prompts answer first
        return completion(f"reply {n}", {"prompt_tokens": n + 1, "completion_tokens": 1})

    server = scripted(echo_slowly)
    out = backend_for(server, concurrency=4).generate([Prompt(user=f"prompt {n}") for n in range(5)], 8)
    assert [g.text for g in out] == [f"reply {n}" for n in range(5)]
    assert [g.prompt_tokens for g in out] == [1, 2, 3, 4, 5]


def test_a_reply_without_usage_is_an_error(scripted) -> None:
    server = scripted([completion(usage={})])
    with pytest.raises(BackendError, match="no token usage"):
        backend_for(server).generate([PROMPTS[0]], max_new_tokens=8)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"model": ""},
        {"base_url": "127.0.0.1:8000/v1"},
        {"api_key_env": "sk-not-a-variable-name"},
        {"concurrency": 0},
        {"max_retries": -1},
        {"timeout_s": 0},
        {"backoff_s": -0.5},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError) as error:
        OpenAIConfig(**{"model": "tiny", **bad})
    assert "sk-not-a-variable-name" not in str(error.value)


def test_a_request_that_times_out_says_which_option_to_change(scripted) -> None:
    release = threading.Event()

    def too_slow(body: dict) -> Reply:
        release.wait(10)  # answers only after the client gave up
        return completion()

    server = scripted(too_slow)
    with pytest.raises(BackendError, match=r"no reply within 0.2 s: a slow server with 8 requests in flight needs a longer "
                                           r"--request-timeout or a smaller --batch-size"):
        backend_for(server, timeout_s=0.2, max_retries=0).generate([PROMPTS[0]], max_new_tokens=8)
    release.set()


def test_the_request_timeout_is_a_command_line_option() -> None:
    from click.testing import CliRunner

    from tale.cli import main

    assert "--request-timeout" in CliRunner().invoke(main, ["evaluate", "--help"]).output
    result = CliRunner().invoke(main, ["generate", "--dataset", "generated", "--request-timeout", "0"])
    assert result.exit_code == 2 and "--request-timeout" in result.output
