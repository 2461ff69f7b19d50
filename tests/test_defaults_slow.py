"""The real embedded defaults end to end: the packaged reasoner through the CLI, and the packaged
encoder trained, exported to ONNX int8 and compared with torch. Minutes, so marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_predictor import synthetic

from tale.cli import main

pytestmark = pytest.mark.slow


def test_generate_with_the_default_model_on_real_gsm8k(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    result = CliRunner().invoke(main, ["generate", "--threads", "1", "--dataset", f"gsm8k:{shared_data / 'gsm8k' / 'test.jsonl'}",
                                       "--limit", "2", "--max-new-tokens", "48", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 questions, method vanilla, model default" in result.output
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["gold"] for a in answers] == ["18", "3"]  # the first two GSM8K test answers
    assert all(1 <= a["output_tokens"] <= 48 and a["prompt_tokens"] > 50 for a in answers)


def test_default_encoder_trains_exports_and_matches_torch(tmp_path: Path) -> None:
    from export.manifest import RuntimeConfig
    from export.onnx import ExportConfig, export_regressor
    from export.runtime import OnnxEstimator
    from predictor.bert import BertRegressor, BertRegressorConfig

    train, held_out = synthetic(48), [e.question for e in synthetic(24, seed=5)]
    regressor = BertRegressor.fit(train, BertRegressorConfig(epochs=1, max_length=64, batch_size=16))
    regressor.save(tmp_path / "bert")
    export_regressor(tmp_path / "bert", tmp_path / "onnx", ExportConfig(int8=True))
    torch_raw = BertRegressor.load(tmp_path / "bert", device="cpu").raw_outputs(held_out)
    fp32 = OnnxEstimator.load(tmp_path / "onnx", RuntimeConfig(precision="fp32", threads=1))
    int8 = OnnxEstimator.load(tmp_path / "onnx", RuntimeConfig(precision="int8", threads=1))
    for ort, ref in zip(fp32.raw_outputs(held_out), torch_raw):
        assert abs(ort - ref) <= 1e-4 * max(1.0, abs(ref))
    for a, b in zip(int8.predict(held_out), fp32.predict(held_out)):
        assert abs(a - b) <= 0.05 * b


def test_generate_with_the_default_model_on_the_ort_engine(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    """The packaged reasoner built at the default precision, int8 (once, into the cache), and
    asked through the CLI: the same questions, prompts and prompt token counts as the hf backend."""
    from reasoner.backends import ort

    built = []

    def recording(source, precision, *rest):  # what the engine asked the builder for
        built.append(precision)
        return ensure_onnx(source, precision, *rest)

    ensure_onnx = ort.ensure_onnx
    monkeypatch.setattr(ort, "ensure_onnx", recording)
    answers = {}
    for backend in ("ort", "hf"):
        out = tmp_path / f"{backend}.jsonl"
        result = CliRunner().invoke(main, ["generate", "--backend", backend, "--threads", "1",
                                           "--dataset", f"gsm8k:{shared_data / 'gsm8k' / 'test.jsonl'}",
                                           "--limit", "2", "--max-new-tokens", "32", "--out", str(out)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        answers[backend] = [json.loads(line) for line in out.read_text().splitlines()]
    assert built == ["int8"]  # the default precision: int8 weights
    assert [a["gold"] for a in answers["ort"]] == ["18", "3"]
    assert [a["prompt_tokens"] for a in answers["ort"]] == [a["prompt_tokens"] for a in answers["hf"]]
    assert all(1 <= a["output_tokens"] <= 32 and a["text"] for a in answers["ort"])
