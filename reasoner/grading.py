"""Answer grading: pull the final answer out of a model's text and compare it with the gold one.

The prompts ask for ``[[answer]]``; small models often answer in another form, so extraction
falls back through the forms they actually use. Numbers are compared exactly (as fractions,
within a relative tolerance of 1e-6); anything symbolic goes to ``math_verify``.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from fractions import Fraction

from reasoner.prompts import KINDS, Kind

logger = logging.getLogger(__name__)

_REL_TOL = Fraction(1, 10**6)
# math_verify's timeouts use signal.alarm, which raises outside the main thread; there we call
# it without timeouts, so _risky() keeps inputs that could make sympy run forever away from it.
_MAIN_THREAD_TIMEOUT_S = 5
_MAX_SYMBOLIC_CHARS = 200

# A number as models write it: optional sign, thousands separators, decimals. The sign only
# counts after a non-operand, so "5-3" yields 3, not -3. ASCII only: "答案是12" holds 12.
_NUM = r"(?:(?<![A-Za-z0-9_)\]}])-)?(?<![A-Za-z0-9_.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUM + r"(?:/\d+)?")
_BRACKETS_RE = re.compile(r"\[\[([^\n]{0,200}?)\]\]")
# Placeholders from the prompts' own wording, which models sometimes echo instead of answering.
_PLACEHOLDERS = {"", "answer", "the answer", "final answer", "答案", "choice", "选项", "option"}
# The prompts' example ("for example: Answer: [[50]]") is often echoed; it is not an answer.
_EXAMPLE_RE = re.compile(r"(example|例如)[^\n]{0,25}$", re.IGNORECASE)
_LABEL_RE = re.compile(
    r"^(?:the\s+)?(?:final\s+)?(?:answer|ans|choice|option|答案|选项)(?![a-z])"
    r"\s*(?:is|是|为)?\s*[:：]?\s*",
    re.IGNORECASE,
)
_ANSWER_IS_RE = re.compile(
    r"(?:answer\s*(?:is|:|=)|答案\s*(?:是|为|：|:))\s*[:：]?\s*[*_]*\s*(\\?\$?\s*"
    + _NUM
    + r"(?:/\d+)?\s*(?:\\?%)?)",
    re.IGNORECASE,
)
_CHOICE_IS_RE = re.compile(
    r"(?:answer|choice|correct option|答案|选项)\s*(?:is|should be|would be|是|为)?\s*[:：]?"
    r"\s*[*_]*\s*(?:option\s*)?(?:\(([A-Ja-j])\)|((?-i:[A-J]))(?![\w'’]))",
    re.IGNORECASE,
)
_LETTER_RE = re.compile(r"^[\[(（]?\s*([A-Ja-j])\s*[\])）]?(?:$|[\s.:：,、)）])")
_LINE_LETTER_RE = re.compile(r"^\s*[*_]*\s*\(?([A-J])(?:[.):：]|\)?\s*[*_]*\s*$)", re.MULTILINE)
# "A" and "I" are also English words; followed by a lowercase word they are not options.
_LONE_LETTER_RE = re.compile(r"(?<![\w'’\\])([A-J])(?![\w'’])(?!(?<=[AI])\s+[a-z])")

# Cloze normalization: LaTeX wrappers and markup that never change a value.
_LATEX_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_STRIP_RE = re.compile(r"\\[!,;: ]|\\left|\\right|\^\s*\{?\\circ\}?|°|\*\*")
_PLAIN_NUMBER_RE = re.compile(
    r"^(?:[a-zA-Z]\w*\s*=\s*)?"  # "x = 5"
    r"(?P<sign>[-+]?)\s*"
    r"(?:(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:\s*/\s*(?P<den>\d+))?"
    r"|\\frac\{(?P<fnum>\d+)\}\{(?P<fden>\d+)\})"
    r"\s*(?P<pct>%)?"
    r"\s*(?:[^\W\d_][^\d]*?(?:\^?\{?[23]\}?|[²³])?)?$"  # a unit: "dollars", "km/h", "cm^2"
)


@dataclass(frozen=True)
class Graded:
    """One graded model output."""

    predicted: str | None
    """The extracted answer, or None when the text holds none."""
    correct: bool


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _strip_label(s: str) -> str:
    s = s.strip().strip("*_").strip()
    s = _LABEL_RE.sub("", s)
    return s.strip().strip("*_").rstrip("。.").strip()


def _bracketed(text: str) -> list[str]:
    """Contents of ``[[...]]``, last first, minus placeholders and the echoed prompt example."""
    found = []
    for m in _BRACKETS_RE.finditer(text):
        content = _strip_label(m.group(1))
        echoed = _EXAMPLE_RE.search(text[max(0, m.start() - 40) : m.start()])
        if content.lower() in _PLACEHOLDERS or echoed:
            continue
        found.append(content)
    return found[::-1]


def _boxed(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}``, braces matched so ``\\boxed{\\frac{3}{4}}`` is whole."""
    found = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found.append(text[m.end() : i - 1].strip())
    return found


def _letter(s: str) -> str | None:
    m = _LETTER_RE.match(_strip_label(s))
    return m.group(1).upper() if m else None


def _extract_choice(text: str) -> str | None:
    for content in _bracketed(text) + _boxed(text)[::-1]:
        if letter := _letter(content):
            return letter
    if said := list(_CHOICE_IS_RE.finditer(text)):
        return (said[-1].group(1) or said[-1].group(2)).upper()
    # A letter opening a line ("B. 42") counts only if one letter does: several mean an echoed list.
    if len(line_letters := set(_LINE_LETTER_RE.findall(text))) == 1:
        return line_letters.pop()
    if lone := _LONE_LETTER_RE.findall(text):
        return lone[-1]
    return None


def _extract_cloze(text: str) -> str | None:
    if explicit := _bracketed(text) + [b for b in _boxed(text)[::-1] if b]:
        return explicit[0]
    if said := _ANSWER_IS_RE.findall(text):
        return said[-1].strip()
    if numbers := _NUMBER_RE.findall(text):
        return numbers[-1]
    return None


def extract_answer(text: str, kind: Kind) -> str | None:
    """The final answer in ``text``: a letter A-J for choice, the answer as written for cloze."""
    _check_kind(kind)
    return _extract_choice(text) if kind == "choice" else _extract_cloze(text)


def normalize_cloze(s: str) -> str:
    """Drop markup that never changes a value: labels, ``$``, ``\\text{}``, ``\\boxed{}``, spacing."""
    s = _strip_label(s)
    if (boxed := _boxed(s)) and s.startswith("\\boxed"):
        s = boxed[0]
    s = _LATEX_TEXT_RE.sub(r"\1", s)
    s = _STRIP_RE.sub("", s).replace("{,}", ",").replace("\\%", "%").replace("−", "-")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    return _strip_label(" ".join(s.split()))


def normalize_number(s: str) -> tuple[Fraction, bool] | None:
    """The exact value of a plain number (units dropped) and whether it had a ``%``; else None."""
    m = _PLAIN_NUMBER_RE.match(normalize_cloze(s))
    if m is None:
        return None
    if m["fnum"] is not None:
        value = Fraction(int(m["fnum"]), int(m["fden"])) if int(m["fden"]) else None
    else:
        den = int(m["den"]) if m["den"] else 1
        value = Fraction(m["num"].replace(",", "")) / den if den else None
    if value is None:
        return None
    return (-value if m["sign"] == "-" else value), m["pct"] is not None


def _close(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(a - b) <= _REL_TOL * max(abs(a), abs(b))


def numbers_equal(predicted: tuple[Fraction, bool], gold: tuple[Fraction, bool]) -> bool:
    """Equal values; a ``%`` on one side only may also mean a hundredth ("50%" and "0.5")."""
    (p, p_pct), (g, g_pct) = predicted, gold
    hundredths = p_pct != g_pct and _close(p / 100 if p_pct else p, g / 100 if g_pct else g)
    return _close(p, g) or hundredths


def _risky(s: str) -> bool:
    # Nested powers such as 10^{10^{10}} make sympy hang; without a timeout we must not try them.
    nested_power = re.search(r"\^\s*[{(][^})]*\^|\^\s*\w+\s*\^|\*\*.*\*\*", s)
    return len(s) > _MAX_SYMBOLIC_CHARS or nested_power is not None


def symbolic_equal(predicted: str, gold: str) -> bool:
    """math_verify's verdict on two LaTeX/plain expressions; any error or timeout counts as unequal."""
    if _risky(predicted) or _risky(gold):
        logger.debug("not comparing symbolically, too costly: %r vs %r", predicted, gold)
        return False
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    timeout = _MAIN_THREAD_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        # Wrapped in $...$: bare, math_verify keeps only a leading number ("2\sqrt{2}" -> 2).
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        predicted_parsed = parse(f"${predicted}$", parsing_timeout=timeout)
        if not gold_parsed or not predicted_parsed:
            return False
        return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=timeout))
    except (Exception, TimeoutException):  # TimeoutException is a BaseException
        logger.debug("math_verify failed on %r vs %r", predicted, gold, exc_info=True)
        return False


def is_correct(predicted: str | None, gold: str, kind: Kind) -> bool:
    """Whether ``predicted`` means the same answer as ``gold``; None is never correct."""
    _check_kind(kind)
    if predicted is None:
        return False
    if kind == "choice":
        letter = _letter(predicted)
        return letter is not None and letter == _letter(gold)
    p, g = normalize_cloze(predicted), normalize_cloze(gold)
    if not p:
        return False
    if p.casefold() == g.casefold():
        return True
    p_num, g_num = normalize_number(p), normalize_number(g)
    if p_num is not None and g_num is not None:
        return numbers_equal(p_num, g_num)
    return symbolic_equal(p.replace("%", "\\%"), g.replace("%", "\\%"))


def grade(text: str, gold: str, kind: Kind) -> Graded:
    """Extract the answer from ``text`` and grade it against ``gold``."""
    predicted = extract_answer(text, kind)
    return Graded(predicted=predicted, correct=is_correct(predicted, gold, kind))
