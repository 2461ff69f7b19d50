"""SFT and DPO with trl on TALE-PT training sets; LoRA adapters are merged into a plain model directory.

The trainer's settings are trl's own ``SFTConfig`` / ``DPOConfig``; ``trainer_args`` fills them with the
paper's hyperparameters and settings that suit the machine (CPU or GPU), and any field can be
overridden. ``PostTrainConfig`` holds what trl does not: the model, the prompt mode and LoRA.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from reasoner.errors import ConfigError, InputError, MissingInputError, OutputExistsError
from reasoner.models import resolve_model
from reasoner.post_train.data import (
    PAIR_RULES,
    PROMPT_MODES,
    Counts,
    PairRule,
    PromptMode,
    Record,
    TrainingSet,
    build_dpo_dataset,
    build_sft_dataset,
    records_fingerprint,
)
from reasoner.prompts import PROMPT_VERSION
from reasoner.train_log import log_to

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import Trainer
    from trl import DPOConfig, SFTConfig

logger = logging.getLogger(__name__)

Method = Literal["sft", "dpo"]
METHODS: tuple[Method, ...] = ("sft", "dpo")
RUN_CONFIG = "tale_train.json"
ADAPTER_DIR = "adapter"  # the LoRA adapter, saved beside the merged model: a few MB, committable
DTYPES = ("float32", "bfloat16", "float16", "auto")

# The paper's settings (Han et al., 2025, TALE-PT), overridable field by field. The batch size is
# per device: under `accelerate launch` on N GPUs the global batch is N times larger.
PAPER_ARGS: dict[Method, dict[str, Any]] = {
    "sft": {"num_train_epochs": 3, "per_device_train_batch_size": 16, "learning_rate": 1e-4, "weight_decay": 0.01},
    "dpo": {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 3e-5, "weight_decay": 0.001,
            "beta": 0.5},  # beta from the authors' code
}
# Fields of the trainer settings that must not be written beside the model.
_SECRET_ARGS = ("hub_token", "push_to_hub_token")


@dataclass(frozen=True)
class PostTrainConfig:
    """A TALE-PT run's own settings; the optimisation ones live in trl's SFTConfig / DPOConfig."""

    model: str = "default"  # "default" (the embedded reasoner), a local directory or a hub id
    prompt_mode: PromptMode = "budget"  # budget: beta* in the prompt; hindsight: the answer's tokens; internalized: none
    lora: bool = True  # train LoRA adapters and merge them on save; False: full fine-tuning
    lora_r: int = 8  # the paper's rank
    lora_alpha: int = 32  # the paper's scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # the paper's LoRA targets
    dtype: str = "float32"  # weights as loaded and saved; mixed precision is the trainer's bf16/fp16
    slack: float = 1.0  # hindsight and adherence pairs: the prompt states ceil(slack x the answer's tokens)
    pairs: PairRule = "vanilla"  # DPO: vanilla (the paper's), adherence (a correct answer far over the stated budget), both
    over: float = 2.0  # adherence pairs: the rejected answer has more than this many times the stated budget
    max_examples: int | None = None  # train on this many of the examples, drawn at random (the trainer's seed): a CPU budget

    def __post_init__(self) -> None:
        if not (self.slack >= 1.0 and self.slack < float("inf")):
            raise ConfigError(f"slack must be a finite number >= 1, got {self.slack!r}")
        if self.slack != 1.0 and self.prompt_mode != "hindsight" and self.pairs == "vanilla":
            raise ConfigError("slack applies to hindsight prompts and adherence pairs only")
        if self.pairs not in PAIR_RULES:
            raise ConfigError(f"pairs must be one of {PAIR_RULES}, got {self.pairs!r}")
        if not self.over > 1:
            raise ConfigError(f"over must be above 1, got {self.over!r}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError(f"max_examples must be at least 1, got {self.max_examples!r}")
        if self.prompt_mode not in PROMPT_MODES:
            raise ConfigError(f"prompt_mode must be one of {PROMPT_MODES}, got {self.prompt_mode!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ConfigError(f"LoRA needs r >= 1 and alpha > 0, got r={self.lora_r}, alpha={self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lora and not self.target_modules:
            raise ConfigError("LoRA needs at least one target module")


@dataclass(frozen=True)
class TrainResult:
    """Where the trained model went, what it was trained on, and the trainer's final metrics."""

    out: Path
    counts: Counts
    metrics: Mapping[str, float] = field(default_factory=dict)


def trainer_args(method: Method, **overrides: Any) -> SFTConfig | DPOConfig:
    """trl's settings for ``method``: the paper's hyperparameters, no checkpoints, no loggers, and
    device settings decided by whether a GPU is present (``use_cpu``, bf16, gradient checkpointing);
    ``overrides`` are any SFTConfig / DPOConfig fields and win."""
    import torch
    from trl import DPOConfig, SFTConfig

    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    cls = SFTConfig if method == "sft" else DPOConfig
    cuda = torch.cuda.is_available()
    # transformers 5.2x renamed gradient_checkpointing (the old name still works, with a warning).
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in {f.name for f in fields(cls)} \
        else "gradient_checkpointing"
    if "gradient_checkpointing" in overrides:  # else the new name's default would silently win
        overrides[checkpointing] = overrides.pop("gradient_checkpointing")
    settings = {
        # A placeholder: with save_strategy "no" the run points it at a temporary directory.
        "output_dir": str(Path(tempfile.gettempdir()) / "tale-train"),
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 10,
        "use_cpu": not cuda,
        # On a CPU bf16 autocast is slower and gradient checkpointing only costs time.
        "bf16": cuda and torch.cuda.is_bf16_supported() and not overrides.get("fp16"),
        checkpointing: cuda,
        # DPO: the reference model's log-probabilities once, before training, so that each step runs the
        # policy only (with LoRA the reference is the model with its adapters disabled: a second forward).
        **({"precompute_ref_log_probs": True} if method == "dpo" else {}),
        **PAPER_ARGS[method],
        **overrides,
    }
    return cls(**settings)


def rpo_loss(sft_weight: float) -> dict[str, Any]:
    """DPOConfig fields for DPO plus ``sft_weight`` times the chosen answers' negative log-likelihood
    (RPO, Pang et al. 2024; trl's ``rpo_alpha`` before it became a second loss type): the preference
    term alone can make short answers likelier by making every answer less likely, correct ones too."""
    if not sft_weight > 0:
        raise ConfigError(f"sft_weight must be above 0, got {sft_weight!r}")
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float(sft_weight)]}


def build_training_set(method: Method, records: Iterable[Record], mode: PromptMode = "budget",
                       slack: float = 1.0, pairs: PairRule = "vanilla", over: float = 2.0) -> TrainingSet:
    if method == "sft":
        return build_sft_dataset(records, mode, slack)
    return build_dpo_dataset(records, mode, slack, pairs, over)


def draw_examples(training_set: TrainingSet, n: int | None, seed: int) -> TrainingSet:
    """``n`` of the training rows drawn at random with ``seed`` (all of them when there are no more);
    the counts say how many are kept. DPO precomputes the reference for these only."""
    if n is None or len(training_set.dataset) <= n:
        return training_set
    logger.info("training on %d of the %d examples, drawn with seed %d", n, len(training_set.dataset), seed)
    return replace(training_set, dataset=training_set.dataset.shuffle(seed=seed).select(range(n)),
                   counts=replace(training_set.counts, examples=n))


def _torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def make_trainer(method: Method, dataset: Dataset, config: PostTrainConfig, args: SFTConfig | DPOConfig) -> Trainer:
    """An SFTTrainer or DPOTrainer over ``dataset`` for ``config.model``, LoRA-wrapped if configured.

    DPO's reference model: with LoRA, the same model with its adapters disabled (trl's default when
    given a peft config); in full fine-tuning, a second copy loaded from the source directory.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer, SFTTrainer

    path = resolve_model(config.model)
    dtype = _torch_dtype(config.dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise InputError(f"{config.model} has no chat template; TALE-PT trains on chat-formatted prompts")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    common = dict(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    if method == "sft":
        return SFTTrainer(**common)
    ref_model = None if config.lora else AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return DPOTrainer(ref_model=ref_model, **common)


def save_merged(trainer: Trainer, out: Path) -> None:
    """Save the trained model as a plain directory (config, safetensors, tokenizer, chat template):
    LoRA adapters are merged into the weights, so any transformers-compatible server loads it."""
    from peft import PeftModel

    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        if accelerator.is_main_process:
            model.save_pretrained(out / ADAPTER_DIR)  # before merging: merge_and_unload changes the weights
            _portable_adapter(out / ADAPTER_DIR)
        model = model.merge_and_unload()
    model.config.use_cache = True  # training switches the cache off; inference wants it
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        trainer.processing_class.save_pretrained(out)
    accelerator.wait_for_everyone()


def _portable_adapter(directory: Path) -> None:
    """No machine's paths in what gets committed: peft writes the base model's local path into
    adapter_config.json and a model card; the run config names the base model instead."""
    (directory / "README.md").unlink(missing_ok=True)
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = None
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def rebuild_merged(run_dir: Path, out: Path, model: str | None = None) -> Path:
    """Rebuild a LoRA-trained model from its run directory (``tale_train.json`` and ``adapter/``, the
    files worth committing): load the base model the run config names (or ``model``), apply the
    adapter, merge and save a plain model directory in ``out`` with the run config beside it."""
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, out = Path(run_dir), Path(out)
    config_path, adapter = run_dir / RUN_CONFIG, run_dir / ADAPTER_DIR
    if not config_path.is_file():
        raise MissingInputError(f"{config_path}: no run config; pass the directory tale train-reasoner wrote")
    if not (adapter / "adapter_config.json").is_file():
        raise MissingInputError(f"{adapter}: no LoRA adapter (a full fine-tune, or trained before adapters were saved)")
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out} is not empty; choose a new output directory")
    document = json.loads(config_path.read_text())
    base = resolve_model(model or document["config"]["model"])
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=_torch_dtype(document["config"].get("dtype", "float32")))
    merged = PeftModel.from_pretrained(base_model, adapter).merge_and_unload()
    merged.config.use_cache = True
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    shutil.copytree(adapter, out / ADAPTER_DIR)
    (out / RUN_CONFIG).write_text(json.dumps({**document, "rebuilt_from": str(run_dir)}, indent=2) + "\n")
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets")}


def run_config(method: Method, config: PostTrainConfig, args: SFTConfig | DPOConfig, training_set: TrainingSet,
               records: dict[str, Any], metrics: Mapping[str, float], scratch: bool) -> dict[str, Any]:
    """Everything needed to trace and rerun a training run, as JSON."""
    trainer = {k: v for k, v in args.to_dict().items() if k not in _SECRET_ARGS}
    if scratch:
        trainer["output_dir"] = None  # a temporary directory, removed after the run
    return {
        "method": method,
        "config": {**asdict(config), "target_modules": list(config.target_modules)},
        "base_model": resolve_model(config.model),
        "prompt_version": PROMPT_VERSION,
        "trainer_args": trainer,
        "records": records,
        "counts": training_set.counts.to_json(),
        "metrics": dict(metrics),
        "versions": _versions(),
    }


def post_train(
    method: Method,
    records: Iterable[Record],
    out: Path,
    config: PostTrainConfig | None = None,
    args: SFTConfig | DPOConfig | None = None,
    *,
    source: Iterable[str] = (),
) -> TrainResult:
    """Build the training set from ``records``, train, and save a merged model plus ``tale_train.json``
    in ``out``. ``config`` defaults to ``PostTrainConfig()`` and ``args`` to ``trainer_args(method)``;
    ``source`` names where the records came from (directories), for the run config."""
    import torch

    config = config or PostTrainConfig()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out} is not empty; choose a new output directory")
    records = list(records)
    training_set = build_training_set(method, records, config.prompt_mode, config.slack, config.pairs, config.over)
    if training_set.counts.kept == 0:
        raise InputError(f"no {method} training examples: {training_set.counts.describe()}")
    args = args if args is not None else trainer_args(method)
    training_set = draw_examples(training_set, config.max_examples, args.seed)
    if torch.cuda.is_available() and args.use_cpu:
        logger.warning("a GPU is present but the trainer settings say use_cpu=True; training on the CPU")
    scratch, output_dir = args.save_strategy == "no", args.output_dir
    with tempfile.TemporaryDirectory(prefix="tale-train-") as tmp:
        if scratch:  # nothing is saved there; keeps the trainer's files out of the working directory
            args.output_dir = tmp
        try:
            trainer = make_trainer(method, training_set.dataset, config, args)
            logger.info("%s on %d examples (%s prompts), %s", method, len(training_set.dataset),
                        config.prompt_mode, "LoRA" if config.lora else "full")
            log_to(trainer, logger)  # the loss lines go to this module's logger, not the console
            metrics = trainer.train().metrics
            save_merged(trainer, out)
        finally:
            args.output_dir = output_dir
    summary = {"source": [str(s) for s in source], "sha256": records_fingerprint(records), "n": len(records)}
    if trainer.accelerator.is_main_process:
        document = run_config(method, config, args, training_set, summary, metrics, scratch)
        (out / RUN_CONFIG).write_text(json.dumps(document, indent=2, default=str) + "\n")
    return TrainResult(out=out, counts=training_set.counts, metrics=metrics)
