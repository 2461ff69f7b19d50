"""ONNX export of a tiny trained regressor: layout, parity with torch, int8, integrity checks, the
torch-free runtime and the export/estimate commands."""

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
from test_predictor import synthetic
from test_predictor_bert import tiny_config

from export.manifest import MANIFEST_FILE, ExportManifest, RuntimeConfig, sha256
from export.onnx import ExportConfig, down_projections, export_regressor
from export.runtime import CorruptExportError, OnnxEstimator
from predictor.baselines import ConstantEstimator
from predictor.bert import BertRegressor
from tale.cli.export import export

REPO = Path(__file__).resolve().parents[1]
# Held out: the regressor trains on synthetic(80) with seed 0. Plus an empty question, a one-word
# one and one past max_length (64 tokens), which is truncated.
HELD_OUT = [e.question for e in synthetic(40, seed=11)] + ["", "budget", " ".join(["many words"] * 80)]


@pytest.fixture(scope="module")
def regressor(tiny_bert_dir: Path) -> BertRegressor:
    return BertRegressor.fit(synthetic(80), tiny_config(tiny_bert_dir))


@pytest.fixture(scope="module")
def regressor_dir(regressor: BertRegressor, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("regressor")
    regressor.save(directory)
    return directory


@pytest.fixture(scope="module")
def onnx_dir(regressor_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export_regressor(regressor_dir, out, ExportConfig(int8=True))
    return out


def load(directory: Path, precision: str | None = None, **settings) -> OnnxEstimator:
    return OnnxEstimator.load(directory, RuntimeConfig(**{"precision": precision, "threads": 1, **settings}))


def copy_of(onnx_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(onnx_dir, tmp_path / "copy"))


# --- export ----------------------------------------------------------------------------------


def test_export_writes_the_documented_layout(onnx_dir: Path, regressor: BertRegressor) -> None:
    import onnx

    assert {p.name for p in onnx_dir.iterdir()} == {"model.onnx", "model.int8.onnx", "tokenizer.json", MANIFEST_FILE}
    data = json.loads((onnx_dir / MANIFEST_FILE).read_text())
    meta = regressor.meta
    assert (data["target_transform"], data["mean"], data["std"]) == ("log", meta.target.mean, meta.target.std)
    assert (data["clamp_min"], data["clamp_max"], data["max_length"]) == (8, 512, 64)
    assert data["input_names"] == ["input_ids", "attention_mask"] and data["output_name"] == "logits"
    assert data["source_fingerprint"] == regressor.training_fingerprint
    assert {p: (m["precision"], m["file"]) for p, m in data["models"].items()} == {
        "fp32": ("fp32", "model.onnx"), "int8": ("int8", "model.int8.onnx")}
    for entry in [*data["models"].values(), data["tokenizer"]]:
        assert entry["sha256"] == sha256(onnx_dir / entry["file"])
    assert data["opset"] >= 17 and data["export_config"]["int8"] is True
    assert data["check"]["fp32_max_abs_diff"] < 1e-4 and {"torch", "onnxruntime"} <= set(data["versions"])
    assert ExportManifest.load(onnx_dir).to_json() == data

    graph = onnx.load(onnx_dir / "model.onnx").graph
    dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == ["batch", 1]
    assert (onnx_dir / "model.int8.onnx").stat().st_size < 0.5 * (onnx_dir / "model.onnx").stat().st_size


def test_an_fp32_export_replaces_an_earlier_int8_one(onnx_dir: Path, tmp_path: Path) -> None:
    out = copy_of(onnx_dir, tmp_path)
    manifest = export_regressor(ExportManifest.load(onnx_dir).source, out)
    assert set(manifest.models) == {"fp32"} and not (out / "model.int8.onnx").exists()
    assert load(out).precision == "fp32"
    with pytest.raises(ValueError, match="holds no int8 model"):
        load(out, "int8")


def test_export_refuses_what_it_cannot_export(regressor_dir: Path, tmp_path: Path) -> None:
    ConstantEstimator(100).save(tmp_path / "constant")
    with pytest.raises(ValueError, match="not a log-target BERT regressor"):
        export_regressor(tmp_path / "constant", tmp_path / "out")
    result = invoke("export", "--predictor", str(tmp_path / "constant"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "Error: " in result.output and "not a log-target BERT regressor" in result.output
    with pytest.raises(ValueError, match="directory of its own"):
        export_regressor(regressor_dir, regressor_dir)
    with pytest.raises(ValueError, match="opset"):
        ExportConfig(opset=13)


# --- parity ----------------------------------------------------------------------------------


def test_fp32_matches_torch(onnx_dir: Path, regressor: BertRegressor) -> None:
    estimator = load(onnx_dir, "fp32")
    torch_inputs = regressor.encode(HELD_OUT)
    ort_inputs = estimator.encode(HELD_OUT)
    assert list(ort_inputs) == list(torch_inputs)
    assert all(np.array_equal(ort_inputs[k], torch_inputs[k].numpy()) for k in torch_inputs)

    expected = regressor.raw_outputs(HELD_OUT)
    assert estimator.raw_outputs(HELD_OUT) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert estimator.predict_float(HELD_OUT) == pytest.approx(regressor.predict_float(HELD_OUT), rel=1e-4)
    assert estimator.predict(HELD_OUT) == regressor.predict(HELD_OUT)
    # One at a time (no padding) and in odd batches, the same outputs.
    assert load(onnx_dir, "fp32", batch_size=7).raw_outputs(HELD_OUT) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert [estimator.raw_outputs([q])[0] for q in HELD_OUT[:5]] == pytest.approx(expected[:5], rel=1e-4, abs=1e-6)
    assert estimator.predict([]) == [] and estimator.training_fingerprint == regressor.training_fingerprint


def test_int8_budgets_stay_within_5_percent_of_fp32(onnx_dir: Path) -> None:
    fp32 = load(onnx_dir, "fp32").predict(HELD_OUT)
    int8 = load(onnx_dir, "int8").predict(HELD_OUT)
    assert len(set(fp32)) > 5  # the budgets vary, so the comparison means something
    assert all(abs(a - b) <= 0.05 * b for a, b in zip(int8, fp32)), list(zip(int8, fp32))


def test_int8_keeps_the_feed_forward_down_projections_in_fp32(onnx_dir: Path, regressor_dir: Path, tmp_path: Path) -> None:
    import onnx

    layers = BertRegressor.load(regressor_dir).model.config.num_hidden_layers
    down = down_projections(onnx_dir / "model.onnx")
    assert len(down) == layers and all("output/dense" in name and "attention" not in name for name in down)

    def float_matmuls(path: Path) -> set[str]:
        return {n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"}

    assert set(down) <= float_matmuls(onnx_dir / "model.int8.onnx")
    assert ExportManifest.load(onnx_dir).export_config["fp32_down_projections"] is True
    result = invoke("export", "--predictor", str(regressor_dir), "--out", str(tmp_path / "all"), "--int8", "--int8-all", "--threads", "1")
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(export, ["--predictor", str(regressor_dir), "--out", str(tmp_path / "x"), "--int8-all"])
    assert refused.exit_code == 2 and "give --int8 too" in refused.output and not (tmp_path / "x").exists()
    assert not set(down) & float_matmuls(tmp_path / "all" / "model.int8.onnx")


def test_precision_defaults_to_int8_when_exported_and_threads_are_set(onnx_dir: Path) -> None:
    assert load(onnx_dir).precision == "int8"
    one, two = load(onnx_dir, "fp32"), load(onnx_dir, "fp32", threads=2)
    assert one.session.get_session_options().intra_op_num_threads == 1
    assert two.session.get_session_options().intra_op_num_threads == 2
    assert two.raw_outputs(HELD_OUT) == pytest.approx(one.raw_outputs(HELD_OUT), rel=1e-5, abs=1e-6)
    for bad in (dict(threads=-1), dict(precision="fp16"), dict(batch_size=0)):
        with pytest.raises(ValueError):
            RuntimeConfig(**bad)


# --- integrity -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json"])
def test_a_changed_byte_is_refused_naming_the_file(onnx_dir: Path, tmp_path: Path, name: str) -> None:
    out = copy_of(onnx_dir, tmp_path)
    data = bytearray((out / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / name).write_bytes(bytes(data))
    with pytest.raises(CorruptExportError, match=rf"{out / name}: sha256 \w+ does not match"):
        load(out, "fp32")
    if name == "model.onnx":
        assert load(out, "int8").predict(["What is 6 * 7?"])  # only the files used are read


def test_a_missing_file_is_refused_naming_it(onnx_dir: Path, tmp_path: Path) -> None:
    out = copy_of(onnx_dir, tmp_path)
    (out / "model.int8.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{out / 'model.int8.onnx'}: file missing"):
        load(out)
    (out / MANIFEST_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"is not an ONNX export: no {MANIFEST_FILE}"):
        load(out)


# --- no torch --------------------------------------------------------------------------------


def test_the_runtime_and_estimate_command_import_no_torch(onnx_dir: Path) -> None:
    questions = HELD_OUT[:3]
    expected = load(onnx_dir, "int8").predict(questions)
    code = f"""
import io, json, sys, click
from contextlib import redirect_stdout
import export.runtime
from export.runtime import OnnxEstimator, RuntimeConfig
estimator = OnnxEstimator.load({str(onnx_dir)!r}, RuntimeConfig(threads=1))
assert estimator.predict({questions!r}) == {expected!r}, estimator.predict({questions!r})
from tale.cli.export import estimate
out = io.StringIO()
with redirect_stdout(out):
    estimate(["--predictor", {str(onnx_dir)!r}, "--threads", "1", *{questions!r}], standalone_mode=False)
assert [json.loads(line)["budget"] for line in out.getvalue().splitlines()] == {expected!r}, out.getvalue()
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
assert not heavy, heavy
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- commands --------------------------------------------------------------------------------


def invoke(*args: str, input: str | None = None):
    from tale.cli import main  # the group: its one error path turns a user's error into one line, exit 2

    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("command", ["export", "estimate"])
def test_commands_have_help_with_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example: tale " + command in result.output.replace("\n", " ")


def test_export_then_estimate_from_arguments_a_file_and_stdin(regressor_dir: Path, regressor: BertRegressor,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    result = invoke("export", "--predictor", str(regressor_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "fp32: " in result.output and "int8" not in result.output and (out / MANIFEST_FILE).is_file()
    questions = HELD_OUT[:3]
    expected = regressor.predict(questions)

    result = invoke("estimate", "--predictor", str(out), "--threads", "1", *questions)
    assert result.exit_code == 0, result.output
    assert lines(result) == [{"id": i, "budget": b} for i, b in enumerate(expected)]

    rows = [{"id": "a", "question": questions[0]}, {"question": questions[1]}, {"id": 7, "question": questions[2]}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    result = invoke("estimate", "--predictor", str(out), "--threads", "1", "--input", str(tmp_path / "q.jsonl"))
    assert lines(result) == [{"id": "a", "budget": expected[0]}, {"id": 1, "budget": expected[1]},
                                    {"id": 7, "budget": expected[2]}]

    stdin = f"{questions[0]}\n\n{json.dumps({'id': 'b', 'question': questions[1]})}\n{questions[2]}\n"
    result = invoke("estimate", "--predictor", str(out), "--threads", "1", input=stdin)
    assert lines(result) == [{"id": 0, "budget": expected[0]}, {"id": "b", "budget": expected[1]},
                                    {"id": 2, "budget": expected[2]}]

    aimed = invoke("estimate", "--predictor", str(out), "--threads", "1", "--aim", "2", *questions)
    onnx = OnnxEstimator.load(out)
    assert aimed.exit_code == 0 and [r["budget"] for r in lines(aimed)] == [
        onnx.manifest.budget_range.clamp(2 * v) for v in onnx.predict_float(questions)] != expected
    assert invoke("estimate", "--predictor", str(out), "--aim", "0", *questions).exit_code == 2

    result = invoke("estimate", "--predictor", str(regressor_dir), "--threads", "1", *questions)  # torch, same budgets
    assert result.exit_code == 0 and lines(result) == lines(invoke("estimate", "--predictor", str(out), "--threads", "1", *questions))


def test_estimate_errors_name_the_problem(onnx_dir: Path, regressor_dir: Path, tmp_path: Path) -> None:
    result = invoke("estimate", "--predictor", str(regressor_dir), "--precision", "int8", "q")
    assert result.exit_code == 2 and "--precision applies to an ONNX export" in result.output
    (tmp_path / "bad.jsonl").write_text('{"question": "fine"}\n{"id": 1}\n')
    result = invoke("estimate", "--predictor", str(onnx_dir), "--input", str(tmp_path / "bad.jsonl"))
    assert result.exit_code == 2 and f"{tmp_path / 'bad.jsonl'}:2: expected an object with a string 'question'" in result.output
    result = invoke("estimate", "--predictor", str(onnx_dir), "--input", str(tmp_path / "bad.jsonl"), "q")
    assert result.exit_code == 2 and "not both" in result.output
    out = copy_of(onnx_dir, tmp_path)
    (out / "model.int8.onnx").write_bytes(b"not a model")
    result = invoke("estimate", "--predictor", str(out), "q")
    assert result.exit_code == 2 and f"{out / 'model.int8.onnx'}: sha256" in result.output


def test_estimator_names_load_the_regressor_and_its_export(regressor_dir: Path, onnx_dir: Path,
                                                           regressor: BertRegressor) -> None:
    """``bert:DIR`` and ``onnx:DIR``, as eval-predictor, evaluate and ablate name them."""
    from tale.eval.sources import EstimatorBudget, build_estimator

    questions = HELD_OUT[:8]
    assert build_estimator(f"bert:{regressor_dir}").predict(questions) == regressor.predict(questions)
    from_onnx = build_estimator(f"onnx:{onnx_dir}")
    assert isinstance(from_onnx, OnnxEstimator)
    assert from_onnx.predict(questions) == load(onnx_dir).predict(questions)
    from data_builder.sources import Problem

    problems = [Problem(f"q{i}", q, "1") for i, q in enumerate(questions)]
    assigned = EstimatorBudget(from_onnx, f"onnx:{onnx_dir}").assign(problems)
    assert [a.budget for a in assigned] == from_onnx.predict(questions)
    assert all(a.prompt_tokens == 0 for a in assigned)
    assert len({a.seconds for a in assigned}) == 1  # one call's time, shared equally by its questions
