"""Thinking budgets per upstream kind: the exact request each kind is sent, the answer reserve, budget 0, auto."""

from __future__ import annotations

import copy

import pytest

from tale.serve.upstreams import DIRECT_LINE, UPSTREAM_KINDS, direct_prompt, effort, guess_kind, thinking_fields

BODY = {"model": "m", "messages": [{"role": "user", "content": "What is 6 * 7?"}], "max_tokens": 50, "temperature": 0.2}

# kind -> (the body for budget 300 with a reserve of 100 and a client cap of 50, the fields it names)
EXPECTED = {
    "vllm": ({**BODY, "thinking_token_budget": 300, "max_tokens": 400}, ["thinking_token_budget", "max_tokens"]),
    "sglang": ({**BODY, "chat_template_kwargs": {"thinking_budget": 300}, "max_tokens": 400},
               ["chat_template_kwargs.thinking_budget", "max_tokens"]),
    "llama.cpp": ({**BODY, "max_tokens": 400}, ["max_tokens"]),
    "openai": ({**{k: v for k, v in BODY.items() if k != "max_tokens"}, "reasoning_effort": "low", "max_completion_tokens": 400},
               ["reasoning_effort", "max_completion_tokens"]),
    "anthropic-compat": ({**BODY, "thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 1124}, ["thinking", "max_tokens"]),
    "gemini-compat": ({**BODY, "extra_body": {"google": {"thinking_config": {"thinking_budget": 300}}}, "max_tokens": 400},
                      ["extra_body.google.thinking_config.thinking_budget", "max_tokens"]),
    "openrouter": ({**BODY, "reasoning": {"max_tokens": 300}, "max_tokens": 400}, ["reasoning.max_tokens", "max_tokens"]),
}
# kind -> the body for budget 0 (do not think)
SKIP = {
    "vllm": {**BODY, "chat_template_kwargs": {"enable_thinking": False}},
    "sglang": {**BODY, "chat_template_kwargs": {"enable_thinking": False}},
    "llama.cpp": {**BODY, "chat_template_kwargs": {"enable_thinking": False}},
    "openai": {**BODY, "reasoning_effort": "minimal"},
    "anthropic-compat": {**BODY, "thinking": {"type": "disabled"}},
    "gemini-compat": {**BODY, "extra_body": {"google": {"thinking_config": {"thinking_budget": 0}}}},
    "openrouter": {**BODY, "reasoning": {"effort": "minimal"}},
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_kind_gets_the_budget_in_its_thinking_field_and_room_for_the_answer(kind: str) -> None:
    before = copy.deepcopy(BODY)
    body, fields = thinking_fields(BODY, kind, 300, 100)
    assert (body, fields) == EXPECTED[kind]
    assert BODY == before  # the client's request is not changed in place
    assert thinking_fields(BODY, kind, 0, 100)[0] == SKIP[kind]


def test_a_larger_client_cap_is_kept_and_client_fields_are_merged_not_lost() -> None:
    mine = {**BODY, "max_tokens": 5000, "chat_template_kwargs": {"custom": 1}, "reasoning": {"exclude": True, "effort": "high"}}
    assert thinking_fields(mine, "vllm", 300, 100)[0]["max_tokens"] == 5000
    assert thinking_fields(mine, "sglang", 300, 100)[0]["chat_template_kwargs"] == {"custom": 1, "thinking_budget": 300}
    assert thinking_fields(mine, "openrouter", 300, 100)[0]["reasoning"] == {"exclude": True, "max_tokens": 300}  # one of effort/max_tokens
    gemini = thinking_fields({**BODY, "reasoning_effort": "high"}, "gemini-compat", 300, 100)[0]
    assert "reasoning_effort" not in gemini  # Gemini refuses a budget and an effort together


def test_effort_tiers_and_the_direct_prompt() -> None:
    assert [effort(b) for b in (0, 128, 129, 1024, 1025, 2048, 2049)] == ["minimal", "minimal", "low", "low", "medium", "medium", "high"]
    body = direct_prompt(BODY, 0)
    assert body["messages"][0]["content"] == f"What is 6 * 7?\n{DIRECT_LINE}" and BODY["messages"][0]["content"] == "What is 6 * 7?"
    parts = direct_prompt({"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}, 0)
    assert parts["messages"][0]["content"][-1] == {"type": "text", "text": DIRECT_LINE}


def test_auto_guesses_from_the_host_then_from_models() -> None:
    assert guess_kind("https://api.openai.com/v1", None)[0] == "openai"
    assert guess_kind("https://openrouter.ai/api/v1", None)[0] == "openrouter"
    assert guess_kind("https://generativelanguage.googleapis.com/v1beta/openai", None)[0] == "gemini-compat"
    assert guess_kind("http://127.0.0.1:8000/v1", {"data": [{"id": "q", "owned_by": "vllm"}]}) == ("vllm", "/v1/models says owned_by 'vllm'")
    assert guess_kind("http://127.0.0.1:8000/v1", {"data": [{"id": "q", "owned_by": "sglang"}]})[0] == "sglang"
    assert guess_kind("http://127.0.0.1:8000/v1", {"data": [{"id": "q", "owned_by": "llamacpp"}]})[0] == "llama.cpp"
    assert guess_kind("http://127.0.0.1:8000/v1", None)[0] == "openai-compatible"
    assert set(EXPECTED) | {"openai-compatible"} == set(UPSTREAM_KINDS)
