"""Evaluation run directories, read back, and their names: the bottom of ``tale.eval``.

A configuration writes ``OUT/runs/<name>/`` (``tale.eval.evaluate``): ``rows.jsonl`` (one ``EvalRow`` per question),
``meta.json`` (the identity a resume must match and the run's problem ids) and ``summary.json``. This module reads
them back and names them, so budget sources that replay a run (``matched:``, ``replay:``) need nothing above it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from data_builder.records import read_objects

ROWS_FILE, META_FILE, SUMMARY_FILE = "rows.jsonl", "meta.json", "summary.json"


@dataclass(frozen=True)
class EvalRow:
    """One graded question, a line of ``rows.jsonl``."""

    id: str
    correct: bool
    output_tokens: int  # reasoner output
    prompt_tokens: int  # reasoner input
    method: str  # the prompt actually asked: direct, vanilla or budget (vanilla for a no-budget fallback)
    budget: int | None = None  # the budget in the prompt
    estimator_prompt_tokens: int = 0
    estimator_output_tokens: int = 0
    estimator_seconds: float = 0.0  # this question's share of the estimation wall time
    seconds: float = 0.0  # this question's share of the reasoner's wall time
    fallback: str | None = None  # no-budget (asked without one) or default-budget (the LLM stated none)
    predicted: str | None = None
    gold: str = ""
    kind: str = "cloze"
    language: str = "en"
    finish_reason: str = ""
    question: str = ""
    text: str = ""

    @property
    def estimator_tokens(self) -> int:
        return self.estimator_prompt_tokens + self.estimator_output_tokens


# --- reading runs back ---------------------------------------------------------------------------

_FIELDS = {f.name for f in fields(EvalRow)}


def load_rows(run_dir: Path) -> list[EvalRow]:
    """Every row of a run directory, in file order."""
    path = Path(run_dir) / ROWS_FILE
    if not path.exists():
        return []
    return [EvalRow(**{k: v for k, v in r.items() if k in _FIELDS}) for r in read_objects(path)]


def read_meta(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / META_FILE).read_text())


def run_dirs(out: Path) -> list[Path]:
    """The run directories of an evaluation directory, by name."""
    return sorted(p.parent for p in (Path(out) / "runs").glob(f"*/{META_FILE}"))


def find_baseline(out: Path, identity: dict[str, Any]) -> Path | None:
    """The vanilla run in ``out`` with the same data set, split, seed, shard, model and backend, if any."""
    keys = ("dataset", "split", "seed", "shard", "model", "backend")
    for run_dir in run_dirs(out):
        theirs = read_meta(run_dir)["identity"]
        if theirs.get("method") == "vanilla" and all(theirs.get(k) == identity.get(k) for k in keys):
            return run_dir
    return None


# --- names -----------------------------------------------------------------------------------------


_GENERIC_STEMS = re.compile(r"test|train|validation|dev|(cloze|single_choice)_(en|cn)")


def data_spec(dataset: str, shard: str | None) -> str:
    """A data set spec with its shard, ``DATASET#I/N``, or the spec alone when the run takes every problem."""
    return dataset if not shard else f"{dataset}#{shard}"


def dataset_label(spec: str) -> str:
    """A short name for a data set spec: ``gsm8k:../data/gsm8k/test.jsonl`` is ``gsm8k:test``,
    ``jsonl:../my/problems.jsonl`` is ``jsonl:problems``, ``mathbench:../data/mathbench/middle`` is
    ``mathbench:middle``; a shard (``EvalConfig.data``) is kept: ``mathbench:middle#1/2``."""
    spec, hash_, shard = spec.rpartition("#") if "#" in spec else (spec, "", "")
    if hash_:
        return f"{dataset_label(spec)}#{shard}"
    kind, _, target = spec.partition(":")
    if not target:
        return kind
    path = Path(target)
    if path.suffix and _GENERIC_STEMS.fullmatch(path.stem) and path.parent.name not in ("", kind):
        return f"{kind}:{path.parent.name}/{path.stem}"
    return f"{kind}:{path.stem if path.suffix else path.name}"


def short_label(name: str) -> str:
    """A model or budget source without its directories: ``oracle:runs/records`` is ``oracle:records``."""
    kind, colon, arg = name.partition(":")
    if colon:
        return f"{kind}:{Path(arg).name or arg}"
    return Path(name).name or name


def _slug(text: str, width: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:width] or "x"


def run_name(identity: dict[str, Any]) -> str:
    """``<data set>__<model>__<method or source>__<hash>``: readable, and unique per data set, split,
    seed, shard, model, method and source. Other settings are not in the name: changing them is refused."""
    what = {k: identity.get(k) for k in ("dataset", "split", "seed", "model", "method", "budget_source")}
    if identity.get("shard"):  # only then, so runs without a shard keep the names they had
        what["shard"] = identity["shard"]
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
    label = identity.get("budget_source") or identity["method"]
    return "__".join([_slug(dataset_label(data_spec(identity["dataset"], identity.get("shard")))), _slug(short_label(identity["model"])),
                      _slug(short_label(label)), digest])
