"""Run directories: what ``tale build``, ``tale evaluate`` and ``tale run`` write their runs into.

Every run directory holds a meta file with the run's ``identity``: every setting that changes what the
run writes (data set, split, seed, model, backend with its precision or dtype, sampling temperature,
prompt version, search or method settings, ...), built from the run's whole config by its
``identity()``. Resuming into a directory whose identity differs is refused with one error,
``RunMismatchError``, naming each setting that changed. Meta files are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reasoner.errors import TaleError

# Identity keys added after runs were written, with the value such runs had: records and evaluations
# made before the temperature was recorded were greedy (the option defaulted to 0).
LEGACY_IDENTITY: dict[str, Any] = {"temperature": 0.0}


class RunMismatchError(TaleError, RuntimeError):
    """The directory holds a run with other settings."""


def changes(before: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Setting -> (recorded, now) for every setting of ``now`` that ``before`` recorded differently."""
    return {k: (before.get(k, LEGACY_IDENTITY.get(k)), v) for k, v in now.items() if before.get(k, LEGACY_IDENTITY.get(k)) != v}


def check_identity(meta_path: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume the run of ``meta_path`` (if there is one) with another ``identity``."""
    if not meta_path.exists():
        return
    raw = json.loads(meta_path.read_text())
    before = raw.get("identity", raw) if isinstance(raw, dict) else {}  # pipeline configs before the key: flat
    if changed := changes(before, identity):
        details = "; ".join(f"{k}: recorded {old!r}, now {new!r}" for k, (old, new) in changed.items())
        raise RunMismatchError(f"{meta_path.parent} holds a run with other settings ({details}); "
                               "rerun with the same settings to resume, or choose another --out")


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
