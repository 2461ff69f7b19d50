"""How each kind of upstream takes a thinking budget, keeps room for the answer, and skips thinking at budget 0.

Capping ``max_tokens`` on a thinking model lets the reasoning eat the cap and ``content`` come back empty. So for an
upstream that thinks, the budget goes into the field that server honours for *thinking*, and the total cap is set to at
least the thinking budget plus ``--answer-reserve`` tokens for the answer (a client's own larger cap is kept). A budget
of 0 asks the upstream not to think where it can, and a non-thinking model gets the direct prompt instead.

| kind | budget N goes to | cap (N + reserve) | budget 0 |
|---|---|---|---|
| openai-compatible | TALE-EP's line and/or `max_tokens` (`--policy`), as before | no reserve: the policy's cap | the direct prompt line |
| vllm | `thinking_token_budget` | `max_tokens` | `chat_template_kwargs.enable_thinking: false` |
| sglang | `chat_template_kwargs.thinking_budget` | `max_tokens` | `chat_template_kwargs.enable_thinking: false` |
| llama.cpp | nothing per request (its budget is a server flag) | `max_tokens` | `chat_template_kwargs.enable_thinking: false` |
| openai | `reasoning_effort` tier (below) | `max_completion_tokens` | `reasoning_effort: minimal` |
| anthropic-compat | `thinking: {type: enabled, budget_tokens: max(N, 1024)}` | `max_tokens` | `thinking: {type: disabled}` |
| gemini-compat | `extra_body.google.thinking_config.thinking_budget` (the client's `reasoning_effort` dropped) | `max_tokens` | `thinking_budget: 0` |
| openrouter | `reasoning: {max_tokens: N}` | `max_tokens` | `reasoning: {effort: minimal}` |

Effort tiers for effort-only APIs, LiteLLM's mapping read backwards: N <= 128 minimal, <= 1,024 low, <= 2,048 medium,
above high. Anthropic refuses a thinking budget under 1,024 tokens, so smaller ones are raised to it. Everything else
in the request is left as the client sent it.
"""

from __future__ import annotations

import copy
from typing import Any

from reasoner.prompts import direct_instruction

UPSTREAM_KINDS = ("openai-compatible", "vllm", "sglang", "llama.cpp", "openai", "anthropic-compat", "gemini-compat", "openrouter")
EFFORT_TIERS = ((128, "minimal"), (1024, "low"), (2048, "medium"))  # budget <= threshold -> tier; above the last: high
ANTHROPIC_MIN_THINKING = 1024
DIRECT_LINE = direct_instruction()


def effort(budget: int) -> str:
    """The reasoning-effort tier of a token budget (0: minimal)."""
    return next((tier for top, tier in EFFORT_TIERS if budget <= top), "high")


def _cap(body: dict[str, Any], field: str, cap: int) -> None:
    """At least ``cap`` tokens in ``field``: a client's larger cap is kept, a smaller or missing one raised."""
    asked = body.get(field)
    body[field] = max(cap, asked) if isinstance(asked, int) and not isinstance(asked, bool) else cap


def _template_kwargs(body: dict[str, Any], **values: Any) -> None:
    kwargs = body.get("chat_template_kwargs")
    body["chat_template_kwargs"] = {**(kwargs if isinstance(kwargs, dict) else {}), **values}


def thinking_fields(body: dict[str, Any], kind: str, budget: int, reserve: int) -> tuple[dict[str, Any], list[str]]:
    """The request for a thinking upstream of ``kind`` with thinking budget ``budget`` (0: do not think), and the
    fields set. ``openai-compatible`` is not handled here (the gateway's ``--policy`` applies)."""
    body = copy.deepcopy(body)
    cap = budget + reserve
    if kind in ("vllm", "sglang", "llama.cpp"):
        if budget == 0:
            _template_kwargs(body, enable_thinking=False)
            return body, ["chat_template_kwargs.enable_thinking"]
        fields = []
        if kind == "vllm":
            body["thinking_token_budget"] = budget
            fields.append("thinking_token_budget")
        elif kind == "sglang":
            _template_kwargs(body, thinking_budget=budget)
            fields.append("chat_template_kwargs.thinking_budget")
        _cap(body, "max_tokens", cap)
        return body, [*fields, "max_tokens"]
    if kind == "openai":
        body["reasoning_effort"] = effort(budget) if budget else "minimal"
        if budget == 0:
            return body, ["reasoning_effort"]
        _cap(body, "max_completion_tokens", cap)
        body.pop("max_tokens", None)  # reasoning models take max_completion_tokens (reasoning included)
        return body, ["reasoning_effort", "max_completion_tokens"]
    if kind == "anthropic-compat":
        if budget == 0:
            body["thinking"] = {"type": "disabled"}
            return body, ["thinking"]
        thinking = max(budget, ANTHROPIC_MIN_THINKING)
        body["thinking"] = {"type": "enabled", "budget_tokens": thinking}
        _cap(body, "max_tokens", thinking + reserve)
        return body, ["thinking", "max_tokens"]
    if kind == "gemini-compat":
        body.pop("reasoning_effort", None)  # Gemini answers 400 to a thinking budget and an effort together
        extra = body.get("extra_body") if isinstance(body.get("extra_body"), dict) else {}
        google = extra.get("google") if isinstance(extra.get("google"), dict) else {}
        config = google.get("thinking_config") if isinstance(google.get("thinking_config"), dict) else {}
        body["extra_body"] = {**extra, "google": {**google, "thinking_config": {**config, "thinking_budget": budget}}}
        if budget == 0:
            return body, ["extra_body.google.thinking_config.thinking_budget"]
        _cap(body, "max_tokens", cap)
        return body, ["extra_body.google.thinking_config.thinking_budget", "max_tokens"]
    if kind == "openrouter":
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        reasoning = {k: v for k, v in reasoning.items() if k not in ("effort", "max_tokens")}  # one of the two, not both
        body["reasoning"] = {**reasoning, **({"effort": "minimal"} if budget == 0 else {"max_tokens": budget})}
        if budget == 0:
            return body, ["reasoning.effort"]
        _cap(body, "max_tokens", cap)
        return body, ["reasoning.max_tokens", "max_tokens"]
    raise ValueError(f"upstream kind must be one of {UPSTREAM_KINDS}, got {kind!r}")


def direct_prompt(body: dict[str, Any], index: int) -> dict[str, Any]:
    """Budget 0 for a model that does not think: the direct-answer line after the question (message ``index``)."""
    body = dict(body)
    messages = [dict(m) for m in body["messages"]]
    content = messages[index]["content"]
    messages[index]["content"] = (f"{content}\n{DIRECT_LINE}" if isinstance(content, str)
                                  else [*content, {"type": "text", "text": DIRECT_LINE}])
    body["messages"] = messages
    return body


# Hosts whose kind is certain from the URL, and what a server's /v1/models says in ``owned_by``.
_HOSTS = {"api.openai.com": "openai", "openrouter.ai": "openrouter", "generativelanguage.googleapis.com": "gemini-compat",
          "api.anthropic.com": "anthropic-compat"}
_OWNERS = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llama.cpp", "llama.cpp": "llama.cpp"}


def guess_kind(upstream: str, models: Any) -> tuple[str, str]:
    """(kind, why) for ``--upstream-kind auto``: from the upstream's host where it is certain, else from the
    ``owned_by`` of its ``/v1/models`` reply (``models``: the parsed JSON, or None when it could not be read);
    otherwise openai-compatible, today's behaviour."""
    from urllib.parse import urlsplit

    host = (urlsplit(upstream).hostname or "").lower()
    for known, kind in _HOSTS.items():
        if host == known or host.endswith("." + known):
            return kind, f"the host {host}"
    data = models.get("data") if isinstance(models, dict) else None
    owners = {str(m.get("owned_by", "")).lower() for m in data if isinstance(m, dict)} if isinstance(data, list) else set()
    for owner in sorted(owners):
        if owner in _OWNERS:
            return _OWNERS[owner], f"/v1/models says owned_by {owner!r}"
    return "openai-compatible", "nothing certain (host and /v1/models): no thinking fields are sent"
