"""TALE-PT: post-train a reasoner with SFT or DPO so that it follows (or internalizes) token budgets.

Training data come from budget records (``tale build``): for each question whose budget search
succeeded, the correct output under the searched budget beta* is the target. SFT trains on it with
the loss on the completion only; DPO prefers it to the vanilla chain-of-thought output when it is
shorter. Prompts carry beta* (``budget`` mode, the default: at inference a budget predictor supplies
the budget), the answer's own output tokens (``hindsight``: every example keeps to the budget it
states), or no budget at all (``internalized``, the paper's TALE-PT).

The result is a plain model directory (LoRA adapters merged) with ``tale_train.json`` and the
adapter (``adapter/``, a few MB: commit it with the run config, and ``tale rebuild-reasoner`` remakes
the merged model in a minute) beside the weights; it loads with the ``hf`` backend, ``transformers serve``, vLLM or SGLang.

On a CPU or one GPU::

    tale train-reasoner sft --records runs/records --out runs/reasoner-sft
    tale train-reasoner dpo --records runs/records --out runs/reasoner-dpo --internalized

On several GPUs of one machine (data parallel; the batch size is per GPU, so ``--batch-size 4`` on
4 GPUs keeps the paper's global batch of 16)::

    accelerate launch --multi_gpu --num_processes 4 -m tale.cli train-reasoner sft \\
        --records runs/records --out runs/reasoner-sft --batch-size 4

``-m tale.cli.train sft ...`` runs the same command without the rest of the ``tale`` CLI.

In Python::

    from data_builder.records import load_records
    from reasoner.post_train import PostTrainConfig, post_train, trainer_args

    records = load_records(Path("runs/records"))
    post_train("sft", records, Path("runs/reasoner-sft"), PostTrainConfig(model="default"),
               trainer_args("sft", max_steps=100), source=["runs/records"])
"""

from reasoner.post_train.data import (
    PAIR_RULES,
    PROMPT_MODES,
    Counts,
    PairRule,
    PromptMode,
    SkipReason,
    TrainingSet,
    build_adherence_pairs,
    build_dpo_dataset,
    build_sft_dataset,
    chosen_tokens,
    correct_answers,
    dpo_skip_reason,
    records_fingerprint,
    sft_skip_reason,
    training_prompt,
)
from reasoner.post_train.train import (
    ADAPTER_DIR,
    METHODS,
    PAPER_ARGS,
    RUN_CONFIG,
    Method,
    PostTrainConfig,
    TrainResult,
    build_training_set,
    make_trainer,
    post_train,
    rebuild_merged,
    rpo_loss,
    save_merged,
    trainer_args,
)

__all__ = [
    "ADAPTER_DIR", "METHODS", "PAIR_RULES", "PAPER_ARGS", "PROMPT_MODES", "RUN_CONFIG", "Counts", "Method", "PairRule",
    "PostTrainConfig", "PromptMode",
    "SkipReason", "TrainResult", "TrainingSet", "build_adherence_pairs", "build_dpo_dataset", "build_sft_dataset", "build_training_set",
    "chosen_tokens", "correct_answers", "dpo_skip_reason", "make_trainer", "post_train", "rebuild_merged", "records_fingerprint", "rpo_loss", "save_merged",
    "sft_skip_reason", "trainer_args", "training_prompt",
]
