"""``tale train-reasoner``: TALE-PT post-training (SFT or DPO) of the reasoner on budget records.

Also runnable on its own, e.g. under ``accelerate launch -m tale.cli.train sft --records ... --out ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from reasoner.post_train import PAIR_RULES, PAPER_ARGS, RUN_CONFIG, PostTrainConfig
from tale.cli.common import setup, torch_threads

RECORDS = click.Path(exists=True, file_okay=False, path_type=Path)
DEFAULTS = PostTrainConfig()


def _paper(field: str) -> str:
    return ", ".join(f"{PAPER_ARGS[m][field]} for {m}" for m in ("sft", "dpo"))


@click.command("train-reasoner")
@click.argument("method", type=click.Choice(["sft", "dpo"]))
@click.option("--records", type=RECORDS, multiple=True, required=True, help="Records directory (repeat for several).")
@click.option("--model", default=DEFAULTS.model, show_default=True,
              help="'default' (the embedded Qwen2.5-Coder-0.5B-Instruct), a local model directory or a hub id.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New directory for the trained model (a plain model directory, adapters merged).")
@click.option("--lora/--full", default=DEFAULTS.lora, show_default=True, help="LoRA adapters (merged on save) or full fine-tuning.")
@click.option("--lora-r", type=click.IntRange(min=1), default=DEFAULTS.lora_r, show_default=True)
@click.option("--lora-alpha", type=click.IntRange(min=1), default=DEFAULTS.lora_alpha, show_default=True)
@click.option("--internalized", is_flag=True, help="Prompts without a budget (the paper's TALE-PT); default: the searched budget is in the prompt.")
@click.option("--hindsight", is_flag=True,
              help=("Prompts state each answer's own output tokens instead of the searched budget, so every example keeps to its budget; "
                    "sft also learns the vanilla answer under its token count."))
@click.option("--slack", type=click.FloatRange(min=1), default=DEFAULTS.slack, show_default=True,
              help=("With --hindsight: prompts state this many times each answer's tokens (rounded up), "
                    "so a model that writes what its prompt states stays under it."))
@click.option("--pairs", type=click.Choice(PAIR_RULES), default=DEFAULTS.pairs, show_default=True,
              help="dpo: vanilla (the paper's: chosen under beta*, rejected the vanilla answer); adherence (chosen under the "
                   "budget its prompt states, rejected a correct answer of the question over --over times it); both.")
@click.option("--over", type=click.FloatRange(min=1, min_open=True), default=DEFAULTS.over, show_default=True,
              help="dpo adherence pairs: how far over the stated budget the rejected answer is.")
@click.option("--precompute-ref/--no-precompute-ref", default=True, show_default=True,
              help="dpo: compute the reference log-probabilities once before training (each step then runs the policy only).")
@click.option("--sft-weight", type=click.FloatRange(min=0, min_open=True), default=None,
              help="dpo: add the chosen answers' negative log-likelihood times this weight to the DPO loss (RPO), "
                   "so the chosen answers stay likely [default: DPO alone].")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, help=f"Default: the paper's ({_paper('num_train_epochs')}).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None, help=f"Default: the paper's ({_paper('learning_rate')}).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help=f"Per device. Default: the paper's ({_paper('per_device_train_batch_size')}).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after N optimizer steps (overrides --epochs).")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
              help="Train on N of the examples (pairs for dpo), drawn at random with --seed: a CPU budget [default: all].")
@click.option("--max-length", type=click.IntRange(min=16), default=1024, show_default=True, help="Tokens per example, prompt and completion together.")
@click.option("--seed", type=int, default=42, show_default=True)
@torch_threads("trains the model")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def train_reasoner(method, records, model, out, lora, lora_r, lora_alpha, internalized, hindsight, slack, pairs, over,
                   precompute_ref, sft_weight, epochs, learning_rate, batch_size, max_steps, max_examples, max_length, seed, threads, verbose):
    """Post-train a reasoner (TALE-PT) with SFT or DPO on searched budgets, and save a plain model.

    sft trains on the correct output under each question's searched budget (loss on the completion
    only); dpo prefers it to the longer vanilla answer. Under `accelerate launch` it runs data parallel
    on several GPUs.

    Example: tale train-reasoner sft --records runs/records --out runs/sft-model
    """
    setup(verbose, threads)
    from data_builder.records import load_records
    from reasoner.post_train import post_train, rpo_loss, trainer_args

    if internalized and hindsight:
        raise click.UsageError("--internalized and --hindsight exclude each other: hindsight prompts state a budget")
    if slack != 1.0 and not hindsight and not (method == "dpo" and pairs != "vanilla"):
        raise click.UsageError("--slack applies to --hindsight prompts and dpo --pairs adherence only")
    if method == "sft" and (pairs != DEFAULTS.pairs or over != DEFAULTS.over):
        raise click.UsageError("--pairs and --over choose DPO pairs; sft takes neither")
    if method == "sft" and sft_weight is not None:
        raise click.UsageError("--sft-weight weighs an NLL term beside the DPO loss; sft is that term alone")
    mode = "internalized" if internalized else "hindsight" if hindsight else "budget"
    config = PostTrainConfig(model=model, prompt_mode=mode, lora=lora, lora_r=lora_r, lora_alpha=lora_alpha, slack=slack,
                             pairs=pairs, over=over, max_examples=max_examples)
    overrides = {"num_train_epochs": epochs, "learning_rate": learning_rate, "per_device_train_batch_size": batch_size,
                 "max_steps": max_steps, **({"precompute_ref_log_probs": precompute_ref} if method == "dpo" else {}),
                 **(rpo_loss(sft_weight) if sft_weight is not None else {})}
    args = trainer_args(method, max_length=max_length, seed=seed,
                        **{k: v for k, v in overrides.items() if v is not None})
    rows = [r for directory in records for r in load_records(directory)]
    result = post_train(method, rows, out, config, args, source=[str(d) for d in records])
    if os.environ.get("RANK", "0") != "0":  # accelerate launch: one report, from the main process
        return
    loss = result.metrics.get("train_loss")
    click.echo(f"{method} ({'LoRA' if lora else 'full'}, {config.prompt_mode} prompts): {result.counts.describe()}"
               + (f"; train loss {loss:.4f}" if loss is not None else ""))
    click.echo(f"model saved to {out}; run config in {out / RUN_CONFIG}")


@click.command("rebuild-reasoner")
@click.option("--from", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A TALE-PT run directory with tale_train.json and adapter/ (e.g. a committed artifacts/reasoner-* directory).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New directory for the merged model.")
@click.option("--model", default=None, help="Base model; default: the one the run config names.")
@torch_threads("loads the base model and merges the adapter into it")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def rebuild_reasoner(run_dir, out, model, threads, verbose):
    """Remake a post-trained model from its committed LoRA adapter, in a minute instead of a retraining.

    Example: tale rebuild-reasoner --from artifacts/reasoner-sft-lengths --out runs/reasoner-sft-lengths
    """
    setup(verbose, threads)
    from reasoner.post_train import rebuild_merged

    rebuild_merged(run_dir, out, model)
    click.echo(f"model rebuilt in {out} from {run_dir}")


if __name__ == "__main__":
    train_reasoner()
