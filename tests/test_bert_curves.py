"""The BERT curve estimator on a tiny encoder: it learns which questions are easy, its curves are monotone, it saves
and loads, and its ONNX export predicts the same curves without torch (sha256-pinned like the regressor's)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_curves import record

from export.load import directory_kind, load_any, load_curves_any
from export.manifest import MANIFEST_FILE, RuntimeConfig, sha256
from export.onnx import ExportConfig, export_curves
from export.runtime import CorruptExportError, OnnxCurves
from predictor.bert_curves import BertCurves, BertCurvesConfig
from predictor.curves import CurveData, CurveHead, MarginalCurves, calibration
from tale.cli import main

REPO = Path(__file__).resolve().parents[1]
EASY = "what is {i} plus one"
HARD = "a train leaves the station at {i} and a second train follows {i} hours later; when do they meet"


def ladder_data(n: int = 24) -> CurveData:
    """Easy questions right at every rung in few tokens; hard ones right only at vanilla, half the time, in many."""
    easy = [record(i, EASY.format(i=i), [[(True, 5)] * 2, [(True, 30)] * 2, [(True, 150)] * 2]) for i in range(n)]
    hard = [record(n + i, HARD.format(i=i), [[(False, 5)] * 2, [(False, 60)] * 2, [(True, 300), (False, 320)]]) for i in range(n)]
    return CurveData.of(easy + hard)


def tiny_curves_config(encoder: Path, **overrides) -> BertCurvesConfig:
    settings = dict(encoder=str(encoder), max_length=64, epochs=40, patience=40, learning_rate=2e-3, batch_size=16,
                    validation_fraction=0.2, seed=3)
    return BertCurvesConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def fitted(tiny_bert_dir: Path) -> BertCurves:
    return BertCurves.fit(ladder_data(), tiny_curves_config(tiny_bert_dir))


@pytest.fixture(scope="module")
def saved(fitted: BertCurves, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bert-curves")
    fitted.save(directory)
    return directory


@pytest.fixture(scope="module")
def exported(saved: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bert-curves-onnx")
    export_curves(saved, out, ExportConfig(int8=True))
    return out


def test_the_head_decodes_logits_and_log_tokens_into_a_monotone_curve() -> None:
    head = CurveHead((0, 64, None), (np.log1p(10), np.log1p(50), np.log1p(200)), (1.0, 0.5, 0.25))
    [curve] = head.decode([[0.0, -2.0, 2.0, 0.0, 2.0, -4.0]])
    p = 1 / (1 + np.exp(-np.array([0.0, -2.0, 2.0])))
    assert curve.success == pytest.approx([(p[0] + p[1]) / 2, (p[0] + p[1]) / 2, p[2]])  # pooled: 0.5 > 0.12
    assert curve.tokens == pytest.approx([10, np.expm1(np.log1p(50) + 1.0), max(1.0, np.expm1(np.log1p(200) - 1.0))])
    with pytest.raises(ValueError, match="reads 6 outputs per question, got 2"):
        head.decode([[0.0, 1.0]])


def test_it_learns_which_questions_are_easy(fitted: BertCurves) -> None:
    data = ladder_data()
    assert fitted.rungs == (0, 64, None) and fitted.meta["n_train"] + fitted.meta["n_validation"] == len(data)
    [easy, hard] = fitted.curves([EASY.format(i=77), HARD.format(i=77)])
    assert easy.success[0] > 0.7 > 0.3 > hard.success[0]
    for curve in (easy, hard):
        assert list(curve.success) == sorted(curve.success)  # monotone in the budget
    assert easy.tokens[2] < hard.tokens[2]
    questions = list(data.questions)
    assert calibration(fitted.curves(questions), data).brier < calibration(MarginalCurves.fit(data).curves(questions), data).brier


def test_it_saves_and_loads_as_a_curve_estimator(fitted: BertCurves, saved: Path) -> None:
    again = load_curves_any(saved)
    assert isinstance(again, BertCurves) and directory_kind(saved) == "curves-bert"
    questions = [EASY.format(i=5), HARD.format(i=9), ""]
    assert np.allclose(again.raw_outputs(questions), fitted.raw_outputs(questions), atol=1e-6)
    assert again.training_fingerprint == fitted.training_fingerprint


def test_the_same_seed_and_data_give_the_same_model(tiny_bert_dir: Path, fitted: BertCurves) -> None:
    data = ladder_data()
    again = BertCurves.fit(data, tiny_curves_config(tiny_bert_dir))
    other = BertCurves.fit(data, tiny_curves_config(tiny_bert_dir, seed=4))
    questions = [EASY.format(i=5), HARD.format(i=9)]
    assert np.allclose(again.raw_outputs(questions), fitted.raw_outputs(questions), atol=1e-5)
    assert not np.allclose(other.raw_outputs(questions), fitted.raw_outputs(questions), atol=1e-3)


def test_the_onnx_export_predicts_the_torch_curves(fitted: BertCurves, exported: Path) -> None:
    manifest = json.loads((exported / MANIFEST_FILE).read_text())
    assert manifest["format"] == "tale-onnx-curves" and manifest["head"]["rungs"] == ["direct", "64", "vanilla"]
    assert manifest["check"]["fp32_max_abs_diff"] < 1e-4
    for entry in [*manifest["models"].values(), manifest["tokenizer"]]:
        assert entry["sha256"] == sha256(exported / entry["file"])
    questions = [EASY.format(i=5), HARD.format(i=9), "", " ".join(["many words"] * 80)]
    runtime = load_curves_any(exported, RuntimeConfig(precision="fp32", threads=1))
    assert isinstance(runtime, OnnxCurves) and directory_kind(exported) == "onnx-curves"
    assert np.allclose(runtime.raw_outputs(questions), fitted.raw_outputs(questions), atol=1e-4)
    for ort_curve, torch_curve in zip(runtime.curves(questions), fitted.curves(questions)):
        assert ort_curve.rungs == torch_curve.rungs
        assert np.allclose(ort_curve.success, torch_curve.success, atol=1e-4)
        assert np.allclose(ort_curve.tokens, torch_curve.tokens, rtol=1e-3)
    int8 = load_curves_any(exported, RuntimeConfig(precision="int8", threads=1)).curves(questions)
    assert np.allclose([c.success for c in int8], [c.success for c in fitted.curves(questions)], atol=0.1)


def test_a_changed_export_file_is_refused(exported: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(exported, tmp_path / "copy"))
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(CorruptExportError, match="sha256"):
        OnnxCurves.load(copy, RuntimeConfig(precision="fp32", threads=1))


def test_a_curve_estimator_is_not_a_budget_estimator(exported: Path, saved: Path) -> None:
    for directory in (exported, saved):
        with pytest.raises(ValueError, match="curve estimator, not a budget estimator: use it through a policy"):
            load_any(directory)


def test_the_export_runtime_needs_no_torch(exported: Path) -> None:
    questions = [EASY.format(i=5), HARD.format(i=9)]
    expected = [list(c.success) for c in OnnxCurves.load(exported, RuntimeConfig(threads=1)).curves(questions)]
    code = f"""
import sys
from export.load import load_curves_any
from export.manifest import RuntimeConfig
curves = load_curves_any({str(exported)!r}, RuntimeConfig(threads=1)).curves({questions!r})
assert [list(c.success) for c in curves] == {expected!r}, curves
heavy = [m for m in ("torch", "transformers", "sklearn") if m in sys.modules]
assert not heavy, heavy
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_train_curves_and_export_from_the_command_line(tiny_bert_dir: Path, tmp_path: Path) -> None:
    ladder = tmp_path / "ladder"  # one shard, as the ladder build writes it
    ladder.mkdir()
    (ladder / "ladder-00000-of-00001.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in _records()))
    runner = CliRunner()
    result = runner.invoke(main, ["train-curves", "--ladder", str(ladder), "--estimator", "bert", "--encoder", str(tiny_bert_dir),
                                  "--epochs", "2", "--max-length", "64", "--threads", "1", "--out", str(tmp_path / "curves")])
    assert result.exit_code == 0, result.output
    assert "bert curves on 48 questions" in result.output and directory_kind(tmp_path / "curves") == "curves-bert"
    result = runner.invoke(main, ["export", "--predictor", str(tmp_path / "curves"), "--out", str(tmp_path / "onnx"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "fp32:" in result.output and directory_kind(tmp_path / "onnx") == "onnx-curves"
    result = runner.invoke(main, ["estimate", "--predictor", str(tmp_path / "onnx"), "--threads", "1", "What is 6 * 7?"])
    assert result.exit_code == 2 and "Error: " in result.output and "not a budget estimator" in result.output


def _records():
    n = 24
    return ([record(i, EASY.format(i=i), [[(True, 5)] * 2, [(True, 30)] * 2, [(True, 150)] * 2]) for i in range(n)]
            + [record(n + i, HARD.format(i=i), [[(False, 5)] * 2, [(False, 60)] * 2, [(True, 300), (False, 320)]]) for i in range(n)])
