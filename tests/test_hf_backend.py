"""The local transformers backend on a tiny model built from config."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasoner.backends import SamplingConfig
from reasoner.backends.hf import HFBackend, HFConfig
from reasoner.prompts import Prompt, reasoning_prompt

PROMPTS = [
    reasoning_prompt("What is 2 + 3?"),
    reasoning_prompt("Natalia sold 48 clips in April and half as many in May. How many in total?"),
    reasoning_prompt("What is 7 * 6?", method="budget", budget=20),
]


@pytest.fixture(scope="module")
def backend(tiny_lm_dir: Path) -> HFBackend:
    return HFBackend(HFConfig(model=str(tiny_lm_dir), device="cpu", batch_size=2))


def test_one_generation_per_prompt_in_order_with_counted_tokens(backend: HFBackend) -> None:
    out = backend.generate(PROMPTS, max_new_tokens=12)
    assert len(out) == len(PROMPTS)
    for prompt, generation in zip(PROMPTS, out):
        text = backend.tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
        assert generation.prompt_tokens == len(backend.tokenizer(text, add_special_tokens=False).input_ids)
        assert 1 <= generation.output_tokens <= 12
        assert generation.finish_reason in ("stop", "length")
        if generation.finish_reason == "length":
            assert generation.output_tokens == 12


def test_batched_greedy_equals_one_at_a_time(backend: HFBackend) -> None:
    """Left padding must not change what greedy decoding produces."""
    batched = backend.generate(PROMPTS, max_new_tokens=10)
    single = [backend.generate([p], max_new_tokens=10)[0] for p in PROMPTS]
    assert batched == single


def test_output_tokens_stop_at_eos(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """A model whose every step emits an end token stops after one token, counted once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    with torch.no_grad():
        model.model.norm.weight.zero_()  # every logit is 0, so greedy picks token id 0 ...
    assert tokenizer.convert_ids_to_tokens(0) == "<|endoftext|>"
    # ... which, as in Qwen's own generation config, is one of the end tokens.
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, 0]
    eos_dir = tmp_path / "eos-model"
    model.save_pretrained(eos_dir)
    tokenizer.save_pretrained(eos_dir)
    backend = HFBackend(HFConfig(model=str(eos_dir), device="cpu"))
    out = backend.generate(PROMPTS[:2], max_new_tokens=8)
    assert [(g.output_tokens, g.finish_reason, g.text) for g in out] == [(1, "stop", "")] * 2


def test_sampling_is_seeded(tiny_lm_dir: Path) -> None:
    config = HFConfig(model=str(tiny_lm_dir), device="cpu", sampling=SamplingConfig(temperature=1.0, seed=3))
    backend = HFBackend(config)
    first = backend.generate(PROMPTS, max_new_tokens=8)
    assert backend.generate(PROMPTS, max_new_tokens=8) == first


def test_bad_settings_are_refused(backend: HFBackend) -> None:
    with pytest.raises(ValueError, match="dtype"):
        HFConfig(dtype="int3")
    with pytest.raises(ValueError, match="max_new_tokens"):
        backend.generate([Prompt(user="hi")], max_new_tokens=0)
