"""The BERT curve estimator: a fine-tuned encoder with two outputs per rung of a ladder, P(correct) and output tokens.

``BertCurves.fit(data, config)`` fine-tunes ``AutoModelForSequenceClassification`` with 2R outputs (R rungs) on ladder
labels (``predictor.curves.CurveData``): outputs 0..R-1 are success logits, trained with the binomial cross-entropy of
each rung's observed samples (a question with 1 of 2 samples right pulls toward 0.5, weighted by its samples); outputs
R..2R-1 are each rung's standardized log(1 + mean output tokens), trained with squared error. The head's success biases
start at the training set's log-odds per rung, so the first steps start from the marginal curve. Validation split by
id hash, early stopping and the best epoch restored, as the BERT regressor (``predictor.bert``, whose training helpers
this reuses). ``CurveHead`` turns the outputs into monotone curves; the ONNX export (``export.onnx.export_curves``)
decodes with the same class, without torch.

    directory/
      config.json, model.safetensors, tokenizer.json, tokenizer_config.json    save_pretrained
      tale_predictor.json                        {"estimator": "curves-bert", the head, inputs, provenance}
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from predictor.bert import EncoderConfig, _device, forward_batched, load_encoder, train_encoder
from predictor.curves import BERT_CURVES, META_FILE, Curve, CurveData, CurveHead, _write_meta
from predictor.data import VALIDATION_SALT, id_unit
from predictor.target import INPUT_NAMES
from reasoner.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

TOKEN_STD_FLOOR = 0.05  # a rung whose log tokens hardly vary still decodes to a finite spread


@dataclass(frozen=True)
class BertCurvesConfig(EncoderConfig):
    """One fine-tuning run of the BERT curve estimator (the encoder settings of ``EncoderConfig``, plus the loss mix)."""

    tokens_weight: float = 1.0  # weight of the log-token squared error against the success cross-entropy

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tokens_weight >= 0:
            raise ConfigError(f"tokens_weight must be >= 0, got {self.tokens_weight}")


def curve_fingerprint(data: CurveData) -> str:
    """sha256 of the training labels (ids, success shares, mean tokens, samples), in id order."""
    order = sorted(range(len(data)), key=lambda i: data.ids[i])
    rows = [[data.ids[i], data.success[i].tolist(), data.tokens[i].tolist(), data.samples[i].tolist()] for i in order]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _labels(data: CurveData, head: CurveHead) -> Any:
    """Per question: right samples per rung, samples per rung, standardized log(1 + tokens) per rung."""
    import numpy as np

    right = np.rint(data.success * data.samples)
    z = (np.log1p(data.tokens) - np.asarray(head.token_mean)) / np.asarray(head.token_std)
    return np.hstack([right, data.samples, z])


def curve_loss(tokens_weight: float) -> Any:
    """The Trainer's ``compute_loss_func``: binomial cross-entropy per sample on the success logits, plus
    ``tokens_weight`` times the mean squared error of the standardized log tokens."""
    import torch.nn.functional as F  # noqa: N812

    def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        n = labels.shape[1] // 3
        z = outputs.logits.float()
        right, samples, tokens = labels[:, :n], labels[:, n:2 * n], labels[:, 2 * n:]
        success = -(right * F.logsigmoid(z[:, :n]) + (samples - right) * F.logsigmoid(-z[:, :n])).sum() / samples.sum().clamp(min=1)
        return success + tokens_weight * ((z[:, n:] - tokens) ** 2).mean()

    return loss


class BertCurves:
    """Satisfies ``predictor.curves.CurveEstimator`` with a fine-tuned encoder (2 outputs per rung)."""

    kind = BERT_CURVES

    def __init__(self, model: Any, tokenizer: Any, head: CurveHead, meta: dict[str, Any], *, device: str = "auto",
                 batch_size: int = 64) -> None:
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer, self.head, self.meta, self.batch_size = tokenizer, head, meta, batch_size
        self.rungs = head.rungs

    @classmethod
    def fit(cls, data: CurveData, config: BertCurvesConfig = BertCurvesConfig()) -> BertCurves:
        import numpy as np
        import torch
        import transformers

        if len(data) < 2:
            raise InputError(f"a BERT curve estimator needs at least 2 training questions, got {len(data)}")
        held = [id_unit(i, VALIDATION_SALT) < config.validation_fraction for i in data.ids]
        train = data.subset([i for i, h in enumerate(held) if not h])
        validation = data.subset([i for i, h in enumerate(held) if h])
        if not len(train):
            raise InputError(f"all {len(data)} questions fell into the validation split; lower validation_fraction")
        logs = np.log1p(train.tokens)
        head = CurveHead(train.rungs, tuple(logs.mean(0).tolist()), tuple(np.maximum(logs.std(0), TOKEN_STD_FLOOR).tolist()))
        source, tokenizer, model = load_encoder(config, num_labels=head.outputs)
        _start_at_the_marginal_curve(model, train)

        def rows(part: CurveData) -> list[dict[str, Any]]:
            if not len(part):
                return []
            batch = tokenizer(list(part.questions), truncation=True, max_length=config.max_length)
            labels = _labels(part, head).tolist()
            return [{**{k: batch[k][i] for k in INPUT_NAMES}, "labels": labels[i]} for i in range(len(part))]

        model, state = train_encoder(model, tokenizer, config, rows(train), rows(validation), curve_loss(config.tokens_weight))
        meta = {
            "estimator": cls.kind, **head.to_json(), "max_length": config.max_length, "input_names": list(INPUT_NAMES),
            "encoder": config.encoder, "encoder_source": source, "training_fingerprint": curve_fingerprint(data),
            "n_train": len(train), "n_validation": len(validation), "epochs_trained": float(state.epoch or 0.0),
            "best_validation_loss": state.best_metric if len(validation) else None, "training_config": asdict(config),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
        logger.info("curves trained on %d questions (%d for validation), %.1f epochs", len(train), len(validation),
                    meta["epochs_trained"])
        return cls(model, tokenizer, head, meta, device=config.device, batch_size=config.predict_batch_size)

    @property
    def training_fingerprint(self) -> str:
        return self.meta["training_fingerprint"]

    @property
    def max_length(self) -> int:
        return self.meta["max_length"]

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        _write_meta(directory, self.meta)

    @classmethod
    def load(cls, directory: Path, *, device: str = "auto", batch_size: int = 64) -> BertCurves:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        meta = json.loads((Path(directory) / META_FILE).read_text())
        tokenizer = AutoTokenizer.from_pretrained(directory, model_input_names=list(meta["input_names"]))
        model = AutoModelForSequenceClassification.from_pretrained(directory)
        return cls(model, tokenizer, CurveHead.from_json(meta), meta, device=device, batch_size=batch_size)

    def encode(self, questions: Sequence[str]) -> dict[str, Any]:
        """The model's inputs for ``questions`` as torch tensors, exactly as ``curves`` feeds them."""
        batch = self.tokenizer(list(questions), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {name: batch[name] for name in self.meta["input_names"]}

    def raw_outputs(self, questions: Sequence[str]) -> list[list[float]]:
        """The 2R outputs per question, before decoding."""
        return forward_batched(self.model, self.encode, questions, self.batch_size, self.device)

    def curves(self, questions: Sequence[str]) -> list[Curve]:
        return self.head.decode(self.raw_outputs(list(questions))) if questions else []


def _start_at_the_marginal_curve(model: Any, data: CurveData) -> None:
    """Set the head's success biases to each rung's training log-odds (clipped away from 0 and 1) and its token biases
    to 0 (the standardized mean), where the head is one linear layer (``classifier``, as BERT's)."""
    import torch

    layer = getattr(model, "classifier", None)
    if not isinstance(layer, torch.nn.Linear) or layer.bias is None:
        logger.info("%s has no linear classifier head: its biases start where from_pretrained put them", type(model).__name__)
        return
    right = (data.success * data.samples).sum(0) / data.samples.sum(0)
    odds = [math.log(p / (1 - p)) for p in right.clip(0.02, 0.98).tolist()]
    with torch.no_grad():
        layer.bias.copy_(torch.tensor(odds + [0.0] * len(odds), dtype=layer.bias.dtype))
