"""Options and helpers shared by the tale commands."""

from __future__ import annotations

import logging

import click

from reasoner.backends import BACKENDS


def setup(verbose: bool, threads: int | None) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if threads:
        import torch

        torch.set_num_threads(threads)


MODEL_HELP = ("'default' (the embedded Qwen2.5-Coder-0.5B-Instruct), a local model directory, a hub id, "
              "or the served model name with --backend openai.")


def backend_options(command=None, *, multiple_models: bool = False):
    """Options every command that talks to a reasoner shares; ``multiple_models`` makes --model
    repeatable (a grid over models). Use as ``@backend_options`` or ``@backend_options(multiple_models=True)``."""
    if command is None:
        return lambda c: backend_options(c, multiple_models=multiple_models)
    model = (click.option("--model", multiple=True, default=["default"], show_default=True, help=f"Repeat for several: {MODEL_HELP}")
             if multiple_models else click.option("--model", default="default", show_default=True, help=MODEL_HELP))
    for option in reversed(
        [
            model,
            click.option("--backend", "backend_kind", type=click.Choice(BACKENDS), default="hf", show_default=True, help="hf: local transformers; openai: any OpenAI-compatible server (vLLM, SGLang, transformers serve, hosted APIs)."),
            click.option("--base-url", default="http://127.0.0.1:8000/v1", show_default=True, help="openai backend: the server's base URL."),
            click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="openai backend: the environment variable that holds the API key."),
            click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16", "auto"]), default="float32", show_default=True, help="hf backend: weights dtype (on a CPU, bfloat16 is a little faster one prompt at a time and about 2x slower in batches; see bench/generate_throughput.py)."),
            click.option("--device", default="auto", show_default=True, help="hf backend: auto, cpu, cuda, cuda:N."),
            click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts per batch (hf) or concurrent requests (openai)."),
            click.option("--temperature", type=float, default=0.0, show_default=True, help="0 decodes greedily."),
            click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)."),
            click.option("-v", "--verbose", is_flag=True, help="Log progress details."),
        ]
    ):
        command = option(command)
    return command


def build_backend(*, model, backend_kind, base_url, api_key_env, dtype, device, batch_size, temperature):
    """The backend the shared options describe."""
    from reasoner.backends import SamplingConfig, make_backend

    sampling = SamplingConfig(temperature=temperature)
    if backend_kind == "hf":
        return make_backend("hf", model, sampling=sampling, dtype=dtype, device=device, batch_size=batch_size)
    return make_backend(
        "openai", model, sampling=sampling, base_url=base_url, api_key_env=api_key_env, concurrency=batch_size
    )


def cached_backends(backend_args: dict):
    """A model -> backend function over the shared options (all but --model) that loads each model once."""
    cache: dict = {}

    def backend_for(model: str):
        if model not in cache:
            cache[model] = build_backend(model=model, **backend_args)
        return cache[model]

    return backend_for
