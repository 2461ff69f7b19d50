"""The local transformers backend on a tiny model built from config."""

from __future__ import annotations

from dataclasses import replace
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
    assert backend.generate(PROMPTS, max_new_tokens=8) == first  # the same seed, the same samples
    other_seed = HFBackend(replace(config, sampling=SamplingConfig(temperature=1.0, seed=4))).generate(PROMPTS, max_new_tokens=8)
    greedy = HFBackend(replace(config, sampling=SamplingConfig())).generate(PROMPTS, max_new_tokens=8)
    assert [g.text for g in other_seed] != [g.text for g in first]  # another seed, other samples
    assert [g.text for g in greedy] != [g.text for g in first]  # sampling, not greedy decoding


def test_bad_settings_are_refused(backend: HFBackend) -> None:
    with pytest.raises(ValueError, match="dtype"):
        HFConfig(dtype="int3")
    with pytest.raises(ValueError, match="max_new_tokens"):
        backend.generate([Prompt(user="hi")], max_new_tokens=0)


def test_greedy_matches_transformers_generate(backend: HFBackend) -> None:
    """The shrinking-batch decoder produces what ``model.generate`` produces, prompt by prompt."""
    import torch

    tokenizer, model = backend.tokenizer, backend.model
    for prompt, generation in zip(PROMPTS, backend.generate(PROMPTS, max_new_tokens=12)):
        text = tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.inference_mode():
            reference = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        new = reference[0, ids.shape[1]:].tolist()
        stop = next((k for k, t in enumerate(new) if t in backend._stop_ids), None)
        new = new if stop is None else new[: stop + 1]
        assert generation.output_tokens == len(new)
        assert generation.text == tokenizer.decode(new, skip_special_tokens=True).strip()


def test_rows_leave_the_batch_when_they_stop(tiny_lm_dir: Path) -> None:
    """A row that stops early leaves the batch; the others decode on exactly as before."""
    backend = HFBackend(HFConfig(model=str(tiny_lm_dir), device="cpu", batch_size=3))
    before = backend.generate(PROMPTS, max_new_tokens=16)
    tokenizer = backend.tokenizer
    rows = [tokenizer(backend._encode(p), add_special_tokens=False).input_ids for p in PROMPTS]
    assert all(g.finish_reason == "length" for g in before)
    outputs = []
    import torch

    for ids in rows:  # the greedy token ids, to choose an end token only the first answer contains
        with torch.inference_mode():
            out = backend.model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)
        outputs.append(out[0, len(ids):].tolist())
    position, token = next((i, t) for i, t in enumerate(outputs[0][:-1])
                           if t not in outputs[1] and t not in outputs[2])
    backend._stop_ids = backend._stop_ids | {token}
    after = backend.generate(PROMPTS, max_new_tokens=16)
    assert (after[0].output_tokens, after[0].finish_reason) == (position + 1, "stop")
    assert after[1:] == before[1:]


def test_the_backend_states_its_identity_and_a_run_of_another_engine_is_refused(backend: HFBackend, tmp_path: Path) -> None:
    from data_builder.build import BuildConfig, build_records
    from data_builder.sources import Problem
    from reasoner.backends import backend_identity
    from reasoner.errors import ConfigError
    from tale.eval.evaluate import EvalConfig, evaluate

    assert backend.identity == "hf" == backend_identity("hf")
    assert backend_identity("hf", dtype="bfloat16") == "hf:bfloat16" and backend_identity("ort", precision="int8") == "ort:int8"
    problems = [Problem("q0", "What is 1 + 1?", "2")]
    with pytest.raises(ConfigError, match="names backend 'ort:int8' but it was given a 'hf' backend"):
        evaluate(EvalConfig(dataset="jsonl:x", out=tmp_path / "eval", backend="ort:int8"), backend, problems=problems)
    with pytest.raises(ConfigError, match="names backend 'openai'"):
        build_records(BuildConfig(dataset="jsonl:x", out=tmp_path / "records", backend="openai"), backend, problems)
    assert not (tmp_path / "eval").exists() and not (tmp_path / "records").exists()  # refused before anything is written
