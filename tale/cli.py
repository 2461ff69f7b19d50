"""The ``tale`` command line. Commands parse options, build a config and call one library function;
heavy imports happen inside the commands so ``tale --help`` stays instant."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from reasoner.backends import BACKENDS


def _setup(verbose: bool, threads: int | None) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if threads:
        import torch

        torch.set_num_threads(threads)


def backend_options(command):
    """Options every command that talks to a reasoner shares."""
    for option in reversed(
        [
            click.option("--model", default="default", show_default=True, help="'default' (the embedded Qwen2.5-Coder-0.5B-Instruct), a local model directory, a hub id, or the served model name with --backend openai."),
            click.option("--backend", "backend_kind", type=click.Choice(BACKENDS), default="hf", show_default=True, help="hf: local transformers; openai: any OpenAI-compatible server (vLLM, SGLang, transformers serve, hosted APIs)."),
            click.option("--base-url", default="http://127.0.0.1:8000/v1", show_default=True, help="openai backend: the server's base URL."),
            click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="openai backend: the environment variable that holds the API key."),
            click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16", "auto"]), default="bfloat16", show_default=True, help="hf backend: weights dtype (bfloat16 is about 2x faster on a CPU)."),
            click.option("--device", default="auto", show_default=True, help="hf backend: auto, cpu, cuda, cuda:N."),
            click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts per batch (hf) or concurrent requests (openai)."),
            click.option("--temperature", type=float, default=0.0, show_default=True, help="0 decodes greedily."),
            click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)."),
            click.option("-v", "--verbose", is_flag=True, help="Log progress details."),
        ]
    ):
        command = option(command)
    return command


def build_backend(backend_kind, model, base_url, api_key_env, dtype, device, batch_size, temperature):
    from reasoner.backends import SamplingConfig, make_backend

    sampling = SamplingConfig(temperature=temperature)
    if backend_kind == "hf":
        return make_backend("hf", model, sampling=sampling, dtype=dtype, device=device, batch_size=batch_size)
    return make_backend(
        "openai", model, sampling=sampling, base_url=base_url, api_key_env=api_key_env, concurrency=batch_size
    )


@click.group()
@click.version_option(package_name="tale-toolkit")
def main() -> None:
    """TALE: token-budget-aware LLM reasoning. Search budgets, learn to predict them, and reason within them."""


@main.command()
@click.option("--dataset", required=True, help="KIND[:PATH]: gsm8k, gsm8k_zero, mathbench, generated, jsonl; e.g. gsm8k:../shared/data/gsm8k/test.jsonl.")
@click.option("--limit", type=int, default=None, help="Use the first N problems (after shuffling, with --seed).")
@click.option("--seed", type=int, default=None, help="Shuffle the problems with this seed before --limit.")
@click.option("--split", default="test", show_default=True, help="Split, for hub data sets.")
@click.option("--budget", type=click.IntRange(min=1), default=None, help="Budget-aware prompt: use less than N tokens.")
@click.option("--direct", is_flag=True, help="Ask for the answer without reasoning.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/generate.jsonl"), show_default=True, help="JSONL of graded answers.")
@backend_options
def generate(dataset, limit, seed, split, budget, direct, max_new_tokens, out, model, backend_kind, base_url,
             api_key_env, dtype, device, batch_size, temperature, threads, verbose):
    """Ask a reasoner math questions and grade the answers.

    Example: tale generate --dataset gsm8k:../shared/data/gsm8k/test.jsonl --limit 8
    """
    if budget is not None and direct:
        raise click.UsageError("--budget and --direct exclude each other")
    _setup(verbose, threads)
    from tqdm import tqdm

    from data_builder.sources import load_problems
    from tale.generate import Summary, answer_problems, write_jsonl

    problems = load_problems(dataset, limit=limit, seed=seed, split=split)
    method = "direct" if direct else "budget" if budget is not None else "vanilla"
    backend = build_backend(backend_kind, model, base_url, api_key_env, dtype, device, batch_size, temperature)
    answers = []
    stream = answer_problems(problems, backend, method=method, budget=budget, max_new_tokens=max_new_tokens, chunk=batch_size)
    with tqdm(total=len(problems), desc=f"{method} {dataset}", unit="q") as bar:
        for answer in write_jsonl(out, stream):
            answers.append(answer)
            bar.update(1)
            mark = "correct" if answer.correct else "wrong  "
            bar.write(f"{mark} {answer.output_tokens:5d} tokens  predicted={answer.predicted!s:>10}  gold={answer.gold:>10}  {answer.id}")
    s = Summary.of(answers)
    click.echo(f"\n{s.n} questions, method {method}, model {model}: accuracy {s.accuracy:.1%}, "
               f"mean output tokens {s.mean_output_tokens:.1f} (over all samples)\nanswers written to {out}")


if __name__ == "__main__":
    main()
