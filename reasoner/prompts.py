"""The TALE prompts, in one place.

Wording follows the paper "Token-Budget-Aware LLM Reasoning" (Han et al., 2025) and its
authors' code: a vanilla chain-of-thought prompt, its budget-aware variant (TALE-EP), direct
answering, and the zero-shot budget estimator. Any change to a template must bump
``PROMPT_VERSION``: every record written by the toolkit stores it, and resuming a job with
another version is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

PROMPT_VERSION = "tale-prompts-v1"

Kind = Literal["cloze", "choice"]
Language = Literal["en", "zh"]
Method = Literal["vanilla", "budget", "direct"]

KINDS: tuple[Kind, ...] = ("cloze", "choice")
LANGUAGES: tuple[Language, ...] = ("en", "zh")
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Prompt:
    """One request to a chat model: a single user turn, optionally after a system turn."""

    user: str
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        """OpenAI-style chat messages, the input of chat templates and chat-completion servers."""
        turns = [{"role": "system", "content": self.system}] if self.system else []
        return [*turns, {"role": "user", "content": self.user}]


# Per language: the question line, the answer-form line per kind, and the closing instruction.
_TEMPLATES: dict[Language, dict[str, str]] = {
    "en": {
        "question": "Q: {question}",
        "cloze": "Give the final answer in the form [[answer]], for example: Answer: [[50]]",
        "choice": "Choose the correct option and give its letter in the form [[choice]], "
        "for example: Choice: [[A]]",
        "vanilla": "Let's think step by step:",
        "budget": "Let's think step by step and use less than {budget} tokens:",
        "direct": "Answer the question directly, without any reasoning or explanation:",
        "estimate": "Task: Analyze the given question and estimate the minimum number of tokens "
        "required to generate a complete and accurate response. Please give the response by "
        "strictly following this format: [[budget]], for example, Budget: [[12]].\n"
        "Question: {question}",
    },
    "zh": {
        "question": "问题：{question}",
        "cloze": "请把最终答案写成 [[答案]] 的形式，例如：答案：[[50]]",
        "choice": "请选择正确的选项，并把选项字母写成 [[选项]] 的形式，例如：选项：[[A]]",
        "vanilla": "让我们一步一步地思考：",
        "budget": "让我们一步一步地思考，并使用少于 {budget} 个 token：",
        "direct": "请直接回答问题，不要给出任何推理或解释：",
        "estimate": "任务：分析给定的问题，估计生成一个完整且准确的回答所需的最少 token 数。"
        "请严格按照以下格式回答：[[budget]]，例如：Budget: [[12]]。\n问题：{question}",
    },
}


def _check(kind: str, language: str, options: Sequence[str]) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    if kind == "choice" and not options:
        raise ValueError("a single-choice question needs its options")
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options are supported, got {len(options)}")


def reasoning_prompt(
    question: str,
    *,
    kind: Kind = "cloze",
    options: Sequence[str] = (),
    language: Language = "en",
    method: Method = "vanilla",
    budget: int | None = None,
) -> Prompt:
    """The prompt that asks a reasoner to solve ``question``.

    ``method`` is ``vanilla`` (chain of thought), ``budget`` (chain of thought within ``budget``
    output tokens, TALE-EP) or ``direct`` (the answer without reasoning).
    """
    _check(kind, language, options)
    if method == "budget":
        if budget is None or isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"a budget-aware prompt needs a positive integer budget, got {budget!r}")
    elif budget is not None:
        raise ValueError(f"method {method!r} takes no budget")
    elif method not in ("vanilla", "direct"):
        raise ValueError(f"method must be vanilla, budget or direct, got {method!r}")
    t = _TEMPLATES[language]
    lines = [t["question"].format(question=question.strip())]
    lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    lines.append(t[kind])
    lines.append(t[method].format(budget=budget))
    return Prompt(user="\n".join(lines))


def direct_instruction(language: Language = "en") -> str:
    """The direct prompt's closing line alone: what a gateway appends to ask a non-thinking model for no reasoning."""
    return _TEMPLATES[language]["direct"]


def budget_instruction(budget: int, language: Language = "en") -> str:
    """TALE-EP's closing line for a budget, alone: what a gateway appends to a user's own message."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"a budget-aware prompt needs a positive integer budget, got {budget!r}")
    return _TEMPLATES[language]["budget"].format(budget=budget)


_ANSWER_LINES: dict[Language, dict[Kind, str]] = {
    "en": {"cloze": "Answer: [[{answer}]]", "choice": "Choice: [[{answer}]]"},
    "zh": {"cloze": "答案：[[{answer}]]", "choice": "选项：[[{answer}]]"},
}


def answer_line(answer: str, *, kind: Kind = "cloze", language: Language = "en") -> str:
    """The final line the prompts ask for (``Answer: [[72]]``), to close a written solution."""
    _check(kind, language, ("",) if kind == "choice" else ())
    return _ANSWER_LINES[language][kind].format(answer=answer)


def estimation_prompt(question: str, *, language: Language = "en") -> Prompt:
    """The zero-shot estimator's prompt: the model states a budget as ``[[N]]``."""
    _check("cloze", language, ())
    return Prompt(user=_TEMPLATES[language]["estimate"].format(question=question.strip()))
