"""The vllm backend: one line when vLLM is missing; on a tiny model built from config (slow, where vLLM is installed:
.ci/run installs the vllm extra in a virtual environment of its own and points TALE_VLLM_PYTHON at it), the offline
engine's Generation fields and token counts against the hf backend's tokenizer and greedy text equal to hf's in fp32;
vLLM's OpenAI server answering the openai backend as hf does; and the gateway's thinking_token_budget honoured by it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_calibrate import calibrated_dirs  # noqa: F401  (fixture: a calibrated tiny regressor and its ONNX export)

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = os.environ.get("TALE_VLLM_PYTHON")  # a Python whose environment has vLLM and this project


def test_a_missing_vllm_is_one_line_saying_how_to_install_it(tmp_path: Path, tiny_lm_dir: Path) -> None:
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n")
    code = ("import sys; sys.modules['vllm'] = None\n"  # import vllm now fails as it does where it is not installed
            "from tale.cli import main\n"
            f"main(['generate', '--dataset', 'jsonl:{problems}', '--backend', 'vllm', '--model', '{tiny_lm_dir}'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: vLLM is not installed: on a CPU machine pip install -e '.[vllm]'"), result.stderr
    assert "Traceback" not in result.stderr


def _vllm_python() -> str:
    if not VLLM_PYTHON:
        pytest.fail("TALE_VLLM_PYTHON is not set: point it at a Python with vLLM and this project (.ci/run sets it)")
    return VLLM_PYTHON


def _in_vllm_env(code: str, timeout: int = 900) -> dict:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([_vllm_python(), "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_offline_engine_matches_hf_on_a_tiny_model(tmp_path: Path) -> None:
    from conftest import save_tiny_causal_lm

    from reasoner.backends import SamplingConfig
    from reasoner.backends.hf import HFBackend, HFConfig
    from reasoner.prompts import reasoning_prompt

    tiny_lm_dir = save_tiny_causal_lm(tmp_path / "tiny-lm", hidden=128, heads=2)  # head size 64, which vLLM's CPU attention runs
    questions = ["What is 6 * 7?", "Natalia sold 48 clips in April and half as many in May. How many in all?"]
    code = f"""
import json
from reasoner.backends.vllm import VLLMBackend, VLLMConfig
from reasoner.prompts import reasoning_prompt
backend = VLLMBackend(VLLMConfig(model={str(tiny_lm_dir)!r}, dtype="float32", max_model_len=512, threads=1, kv_cache_gib=1,
                                 enforce_eager=True))
prompts = [reasoning_prompt(q, method="budget", budget=20) for q in {questions!r}]
out = backend.generate(prompts, 12)
print(json.dumps({{"identity": backend.identity, "generations": [g.__dict__ for g in out]}}))
"""
    got = _in_vllm_env(code)
    hf = HFBackend(HFConfig(model=str(tiny_lm_dir), device="cpu", sampling=SamplingConfig()))
    want = hf.generate([reasoning_prompt(q, method="budget", budget=20) for q in questions], 12)
    assert got["identity"] == "vllm:float32"
    for g, w in zip(got["generations"], want):
        assert g["prompt_tokens"] == w.prompt_tokens  # the same chat template, read the same way
        assert g["text"] == w.text and g["output_tokens"] == w.output_tokens and g["finish_reason"] == w.finish_reason
        assert 1 <= g["output_tokens"] <= 12 and (g["finish_reason"] == "length") == (g["output_tokens"] == 12)


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory):
    """vLLM's OpenAI-compatible server (its own environment) on the tiny model, as a user on a GPU starts it, with a
    reasoning config whose start string, ``<|im_start|>``, opens the chat template's last turn, so that vLLM counts
    the turn's role line and every answer token as thinking and ``thinking_token_budget`` has an effect a test can
    see: after the budget, vLLM forces the end string (" Answer:") into the answer."""
    from conftest import free_port, save_tiny_causal_lm, server_process

    directory = tmp_path_factory.mktemp("vllm-server")
    model = save_tiny_causal_lm(directory / "tiny-lm", hidden=128, heads=2)
    port = free_port()
    reasoning = json.dumps({"reasoning_start_str": "<|im_start|>", "reasoning_end_str": " Answer:"})
    command = [_vllm_python(), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", "tiny",
               "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--host", "127.0.0.1", "--port", str(port),
               "--reasoning-config", reasoning]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    with server_process(command, f"http://127.0.0.1:{port}/health", directory / "log", timeout_s=600, env=env):
        yield f"http://127.0.0.1:{port}/v1", model


@pytest.mark.slow
def test_the_openai_backend_against_a_real_vllm_server(vllm_server) -> None:
    """The path users take on GPUs: --backend openai against vLLM's server answers as the hf backend does (greedy,
    fp32): the same text, token counts from the server's usage, and finish reasons."""
    from reasoner.backends import SamplingConfig
    from reasoner.backends.hf import HFBackend, HFConfig
    from reasoner.backends.openai import OpenAIBackend, OpenAIConfig
    from reasoner.prompts import reasoning_prompt

    base_url, model = vllm_server
    prompts = [reasoning_prompt(q, method="budget", budget=20) for q in ("What is 6 * 7?", "Natalia sold 48 clips. How many?")]
    served = OpenAIBackend(OpenAIConfig(model="tiny", base_url=base_url, concurrency=2, timeout_s=60)).generate(prompts, 12)
    want = HFBackend(HFConfig(model=str(model), device="cpu", sampling=SamplingConfig())).generate(prompts, 12)
    # A reply cut inside a multi-byte character: vLLM's incremental detokenizer holds the incomplete bytes back, where
    # decoding the whole answer at once shows them as U+FFFD; the tokens are the same (the tiny model emits raw bytes).
    assert [(g.text.rstrip("\ufffd"), g.prompt_tokens, g.output_tokens, g.finish_reason) for g in served] == \
        [(w.text.rstrip("\ufffd"), w.prompt_tokens, w.output_tokens, w.finish_reason) for w in want]


@pytest.mark.slow
def test_the_gateway_gives_a_real_vllm_server_its_thinking_budget(vllm_server, calibrated_dirs, tmp_path: Path) -> None:  # noqa: F811
    """``tale serve --upstream-kind vllm`` in front of vLLM's server: a request whose budget is 3 reaches vLLM as
    ``thinking_token_budget: 3`` with room for the answer, and vLLM (which refuses the field unless the server has a
    reasoning config) ends the thinking once 3 tokens are spent (the turn's role line counts) with its end string,
    where the same request without a budget goes on thinking."""
    import httpx
    from conftest import free_port, server_process

    base_url, _ = vllm_server
    tale = str(Path(sys.executable).with_name("tale"))
    port = free_port()
    command = [tale, "serve", "--predictor", str(calibrated_dirs[1]), "--upstream", base_url, "--upstream-kind", "vllm",
               "--answer-reserve", "6", "--port", str(port)]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 6 * 7?"}], "temperature": 0}
    with server_process(command, f"http://127.0.0.1:{port}/healthz", tmp_path / "gateway.log"):
        budgeted = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={**body, "tale_budget": 3}, timeout=120)
        assert budgeted.status_code == 200, budgeted.text
        free = httpx.post(f"{base_url}/chat/completions", json={**body, "max_tokens": 9}, timeout=120).json()
    assert budgeted.headers["X-TALE-Budget"] == "3"
    reply = budgeted.json()
    assert reply["tale"]["fields"] == ["thinking_token_budget", "max_tokens"] and reply["tale"]["route"] == "reason"
    assert reply["usage"]["completion_tokens"] <= 3 + 6  # the budget and the answer reserve: max_tokens 9
    thought = reply["choices"][0]["message"]
    text = (thought.get("reasoning_content") or thought.get("reasoning") or "") + (thought.get("content") or "")
    assert " Answer:" in text, (text, reply.get("tale"))
    free_text = free["choices"][0]["message"]["content"]
    assert " Answer:" not in free_text, free
