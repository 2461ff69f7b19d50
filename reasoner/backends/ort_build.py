"""Building a local model directory into an onnxruntime-genai model, once, in a cache.

The genai model builder (``python -m onnxruntime_genai.models.builder``) turns any supported
transformers directory (the converted default model, a post-trained one, a user's) into an ONNX
decoder with its ``genai_config.json``. Builds are cached under ``$TALE_CACHE/ort`` by the source's
content hash, the precision, the builder options and the genai version, under a file lock, and
written to a temporary directory renamed into place, so a reader never sees a half-built model and a
changed source (a retrained model saved to the same path) gets a new build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from reasoner.models import ModelUnavailableError, cache_root, take_lock

logger = logging.getLogger(__name__)

PRECISIONS = ("int8", "int4", "fp32")  # what the builder quantizes to on a CPU
# The ort backend's --precision choices: a builder precision and its options, each measured against
# the hf backend in docs/results/ort-engine.md.
PRESETS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "int8": ("int8", ()),  # symmetric, block 32
    "int4": ("int4", ()),  # symmetric, block 32, int8 activations (the builder's CPU defaults)
    "int4-asym": ("int4", (("is_symmetric", "false"),)),
    "int4-b128": ("int4", (("block_size", "128"),)),
    "fp32": ("fp32", ()),
}
BUILD_FORMAT = 1  # bump when what this module writes into a build changes


def source_digest(source: Path) -> str:
    """sha256 over a model directory's files (names and contents), memoised by size and mtime so
    that a 1-2 GB model is read once, not on every load."""
    memo_path = cache_root() / "ort" / "digests.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    files = sorted(p for p in source.rglob("*") if p.is_file())
    stamp = [[str(p.relative_to(source)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    key = str(source.resolve())
    if memo.get(key, {}).get("stamp") == stamp:
        return memo[key]["sha256"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    memo[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = memo_path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(memo))
    os.replace(scratch, memo_path)
    return digest.hexdigest()


def build_key(source: Path, precision: str, extra_options: Sequence[tuple[str, str]]) -> str:
    """What a build depends on: the source's contents, the precision, the builder's options and
    the genai version (a new builder may write a different graph)."""
    from importlib.metadata import version

    identity = {
        "source": source_digest(source),
        "precision": precision,
        "extra_options": sorted([k, v] for k, v in extra_options),
        "onnxruntime_genai": version("onnxruntime-genai"),
        "format": BUILD_FORMAT,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def check_source(source: Path) -> None:
    """Refuse, in one line, what the builder cannot take: not a directory, or no model config."""
    if not source.is_dir():
        raise ModelUnavailableError(
            f"the ort backend builds from a local model directory; {source} is not one "
            f"(download a hub model first, e.g. `huggingface-cli download ID --local-dir DIR`)"
        )
    if not (source / "config.json").is_file():
        raise ModelUnavailableError(f"{source} is not a transformers model directory: it has no config.json")


def ensure_onnx(
    source: Path, precision: str = "int8", extra_options: Sequence[tuple[str, str]] = (), cache_dir: Path | None = None
) -> Path:
    """The onnxruntime-genai model directory built from ``source``, building it on first use."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    check_source(source)
    cache_dir = cache_dir or cache_root() / "ort"
    target = cache_dir / f"{source.resolve().name}-{precision}-{build_key(source, precision, extra_options)}"
    if (target / "genai_config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{target.name}.lock", "w") as lock:
        take_lock(lock, str(target))
        if (target / "genai_config.json").is_file():  # another process built it while we waited
            return target
        work = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=cache_dir))
        try:
            _run_builder(source, work / "model", precision, extra_options, work)
            (work / "model" / "tale_source.json").write_text(json.dumps(
                {"source": str(source.resolve()), "precision": precision, "extra_options": list(extra_options)}, indent=2))
            os.replace(work / "model", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _run_builder(source: Path, out: Path, precision: str, extra_options: Sequence[tuple[str, str]], work: Path) -> None:
    from tqdm import tqdm

    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(work / "hf-cache")]
    if extra_options:
        command += ["--extra_options", *(f"{k}={v}" for k, v in extra_options)]
    log = work / "builder.log"
    # One thread: the builder's torch work is small, and more threads only contend on a small CPU.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tqdm(total=1, desc=f"building the ONNX model of {source.name} ({precision}, once)",
              bar_format="{desc}: {elapsed}") as bar, open(log, "w") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        bar.update(1)
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[-1] if lines else "no output")
        raise ModelUnavailableError(f"the onnxruntime-genai builder cannot build {source}: {reason[:300]}")
