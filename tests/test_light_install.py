"""The light, torch-free install: the project's wheel without its dependencies plus the ``light`` extra,
in a virtual environment of its own, runs ``tale estimate`` with the budgets the full install gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import free_port, server_process
from test_export import onnx_dir, regressor, regressor_dir  # noqa: F401  (fixtures: a tiny regressor, exported)

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is 6 * 7?", "Natalia sold clips to 48 of her friends in April, and then half as many in May."]


def extra_requirements(wheel: Path, extra: str) -> list[str]:
    """The requirements a wheel's metadata lists for ``extra`` on this platform, without their markers."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    wanted = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.removeprefix("Requires-Dist:").strip())
            if requirement.marker and "extra" in str(requirement.marker) and requirement.marker.evaluate({"extra": extra}):
                wanted.append(f"{requirement.name}{requirement.specifier}")
    return wanted


@pytest.mark.slow
def test_light_install_from_the_wheel_estimates_without_torch(onnx_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from export.runtime import OnnxEstimator, RuntimeConfig

    source = tmp_path / "source"  # setuptools writes build/ beside the sources: build from a copy of them
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv*", "runs", "artifacts", "build", "*.egg-info",
                                                                "__pycache__", "docs", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(source)], check=True)
    [wheel] = (tmp_path / "dist").glob("tale_toolkit-*.whl")
    light = extra_requirements(wheel, "light")
    assert {r.split(">")[0].split("=")[0] for r in light} == {"onnxruntime", "tokenizers", "numpy", "click", "starlette",
                                                             "uvicorn", "aiohttp", "uvloop", "httptools",
                                                             "prometheus-client"}
    venv = tmp_path / "light"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True)
    subprocess.run([*pip, *light], check=True)

    out = subprocess.run([str(venv / "bin" / "tale"), "estimate", "--predictor", str(onnx_dir), "--threads", "1",
                          *QUESTIONS], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    budgets = [json.loads(line)["budget"] for line in out.stdout.splitlines()]
    assert budgets == OnnxEstimator.load(onnx_dir, RuntimeConfig(threads=1)).predict(QUESTIONS)
    from test_predictor import synthetic

    from export.linear import export_tfidf
    from predictor.baselines import TfidfRidgeEstimator

    tfidf = TfidfRidgeEstimator.fit(synthetic(60))  # the TF-IDF export: scikit-learn here, none there
    tfidf.save(tmp_path / "tfidf")
    export_tfidf(tmp_path / "tfidf", tmp_path / "linear")
    linear = subprocess.run([str(venv / "bin" / "tale"), "estimate", "--predictor", str(tmp_path / "linear"), *QUESTIONS],
                            capture_output=True, text=True, cwd=tmp_path)
    assert linear.returncode == 0, linear.stderr
    assert [json.loads(line)["budget"] for line in linear.stdout.splitlines()] == tfidf.predict(QUESTIONS)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import importlib.util, sys, export.runtime, predictor.linear, tale.cli, tale.serve.app; "
                            "print(importlib.util.find_spec('torch') is None, 'transformers' in sys.modules, "
                            "importlib.util.find_spec('sklearn') is None)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert probe.stdout.split() == ["True", "False", "True"], probe.stderr  # torch and scikit-learn are not even installed

    # the gateway runs there too (no upstream needed for /v1/budgets)
    port = free_port()
    with server_process([str(venv / "bin" / "tale"), "serve", "--predictor", str(onnx_dir), "--upstream", "http://127.0.0.1:9/v1",
                  "--precision", "int8", "--port", str(port)], f"http://127.0.0.1:{port}/healthz", tmp_path / "serve.log"):
        served = httpx.post(f"http://127.0.0.1:{port}/v1/budgets", json={"questions": QUESTIONS[:1]}, timeout=30).json()
    assert served["budgets"] == budgets[:1]
