"""The onnxruntime-genai backend on a tiny model built from config, against the hf backend."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, save_tiny_bert, save_tiny_causal_lm

from reasoner.backends import SamplingConfig, ort_build
from reasoner.backends.hf import HFBackend, HFConfig
from reasoner.backends.ort import ORTBackend, ORTConfig
from reasoner.models import ModelUnavailableError
from reasoner.prompts import reasoning_prompt

PROMPTS = [
    reasoning_prompt("What is 2 + 3?"),
    reasoning_prompt("Natalia sold 48 clips in April and half as many in May. How many in total?"),
    reasoning_prompt("What is 7 * 6?", method="budget", budget=20),
]


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory):
    """Builds go to a temporary $TALE_CACHE, shared by this module's tests."""
    path = tmp_path_factory.mktemp("tale-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TALE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Head size 16: onnxruntime's attention kernel refuses smaller heads.
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm-ort"), heads=2)


@pytest.fixture(scope="module")
def ort(lm_dir: Path, cache: Path) -> ORTBackend:
    return ORTBackend(ORTConfig(model=str(lm_dir), precision="fp32", threads=1, batch_size=2))


@pytest.fixture(scope="module")
def hf(lm_dir: Path) -> HFBackend:
    return HFBackend(HFConfig(model=str(lm_dir), device="cpu", batch_size=2))


def test_build_round_trip_writes_a_genai_model_under_the_cache(ort: ORTBackend, lm_dir: Path, cache: Path) -> None:
    assert ort.onnx_dir.parent == cache / "ort"
    assert (ort.onnx_dir / "genai_config.json").is_file() and (ort.onnx_dir / "model.onnx").is_file()
    source = json.loads((ort.onnx_dir / "tale_source.json").read_text())
    assert source["source"] == str(lm_dir.resolve()) and source["precision"] == "fp32"
    assert not list((cache / "ort").glob("*.tmp*")) and not [p for p in (cache / "ort").iterdir() if p.name.count(".") > 1 and p.is_dir()]


def test_greedy_fp32_equals_the_hf_backend_token_for_token(ort: ORTBackend, hf: HFBackend) -> None:
    assert ort.generate(PROMPTS, max_new_tokens=24) == hf.generate(PROMPTS, max_new_tokens=24)


def test_prompt_tokens_are_the_hf_tokenizers_and_genai_encodes_the_same(ort: ORTBackend, hf: HFBackend) -> None:
    import onnxruntime_genai as og

    genai_tokenizer = og.Tokenizer(ort.model)
    for prompt, generation in zip(PROMPTS, ort.generate(PROMPTS, max_new_tokens=4)):
        text = hf.tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
        ids = hf.tokenizer(text, add_special_tokens=False).input_ids
        assert generation.prompt_tokens == len(ids)
        assert list(genai_tokenizer.encode(text)) == ids


def test_rows_of_one_batch_stop_on_their_own(lm_dir: Path, tmp_path: Path, hf: HFBackend) -> None:
    """Make a token that the first prompt emits early an end token, and one the second prompt never
    emits: in one batch the first row stops there while the second runs to the limit, and both
    equal their answers asked alone (and the hf backend's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = 16
    ids = [hf.tokenizer(hf.tokenizer.apply_chat_template(p.messages(), tokenize=False, add_generation_prompt=True),
                        add_special_tokens=False).input_ids for p in PROMPTS[:2]]
    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    import torch

    with torch.no_grad():
        outputs = [model.generate(torch.tensor([i]), max_new_tokens=steps, do_sample=False)[0, len(i):].tolist() for i in ids]
    stop = next(t for t in outputs[0][2:] if t not in outputs[1] and t not in outputs[0][:2])
    model.generation_config.eos_token_id = [hf.tokenizer.eos_token_id, stop]
    stopping = tmp_path / "stopping"
    model.save_pretrained(stopping)
    AutoTokenizer.from_pretrained(lm_dir).save_pretrained(stopping)
    backend = ORTBackend(ORTConfig(model=str(stopping), precision="fp32", threads=1, batch_size=2))
    batched = backend.generate(PROMPTS[:2], max_new_tokens=steps)
    assert batched[0].finish_reason == "stop" and batched[0].output_tokens == outputs[0].index(stop) + 1 < steps
    assert batched[1].finish_reason == "length" and batched[1].output_tokens == steps
    assert batched == [backend.generate([p], max_new_tokens=steps)[0] for p in PROMPTS[:2]]
    assert batched == HFBackend(HFConfig(model=str(stopping), device="cpu")).generate(PROMPTS[:2], max_new_tokens=steps)


def test_sampling_is_seeded(lm_dir: Path) -> None:
    def sample(seed: int):
        config = ORTConfig(model=str(lm_dir), precision="fp32", threads=1, sampling=SamplingConfig(temperature=1.0, seed=seed))
        return [g.text for g in ORTBackend(config).generate(PROMPTS, max_new_tokens=16)]

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


def test_a_second_load_reuses_the_build(ort: ORTBackend, lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(ort_build, "_run_builder", no_build)
    assert ORTBackend(ORTConfig(model=str(lm_dir), precision="fp32", threads=1)).onnx_dir == ort.onnx_dir


def test_the_cache_key_follows_contents_precision_and_options(lm_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(lm_dir, tmp_path / "copy"))
    fp32 = ort_build.build_key(copy, "fp32", ())
    assert ort_build.build_key(lm_dir, "fp32", ()) == fp32  # same contents, another path
    assert ort_build.build_key(copy, "int8", ()) != fp32
    assert ort_build.build_key(copy, "int4", (("block_size", "32"),)) != ort_build.build_key(copy, "int4", ())
    time.sleep(0.01)
    (copy / "generation_config.json").write_text((copy / "generation_config.json").read_text() + " ")
    assert ort_build.build_key(copy, "fp32", ()) != fp32  # a retrained model saved in place


def test_a_second_process_waits_on_the_lock_and_takes_the_finished_build(lm_dir: Path, cache: Path, tmp_path: Path) -> None:
    """While one process holds the build lock, another waits; when the first finishes, the second
    takes its result instead of building again."""
    import shutil

    source = Path(shutil.copytree(lm_dir, tmp_path / "locked"))
    cache_dir = tmp_path / "ort"
    cache_dir.mkdir()
    target = cache_dir / f"locked-fp32-{ort_build.build_key(source, 'fp32', ())}"
    code = ("import logging, sys; from pathlib import Path; from reasoner.backends import ort_build; "
            "logging.basicConfig(level=logging.INFO, format='%(message)s'); "
            "ort_build._run_builder = lambda *a: sys.exit('built again'); "
            f"print(ort_build.ensure_onnx(Path({str(source)!r}), 'fp32', (), Path({str(cache_dir)!r})))")
    with open(cache_dir / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiter = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The child reaches the lock, finds it held and says so before it blocks (it never gets past it while we hold it).
        said = next((line for line in waiter.stderr if line.startswith("waiting for another process building")), "")
        assert str(target) in said, waiter.communicate()
        target.mkdir()
        (target / "genai_config.json").write_text("{}")  # the first process's build lands
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err  # 'built again' would exit 1
    assert out.strip() == str(target)


def test_a_directory_that_is_not_a_supported_model_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        ort_build.ensure_onnx(tmp_path)
    with pytest.raises(ModelUnavailableError, match="not one"):
        ort_build.ensure_onnx(tmp_path / "missing")
    bert = save_tiny_bert(tmp_path / "bert")
    with pytest.raises(ModelUnavailableError, match=r"builder cannot build .*bert: .+"):
        ort_build.ensure_onnx(bert, "fp32")
    assert not [p for p in (Path(ort_build.cache_root()) / "ort").glob("bert*") if p.is_dir()]


def test_generate_command_on_the_ort_backend(lm_dir: Path, tmp_path: Path, hf: HFBackend) -> None:
    from tale.cli import main

    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "5"}) + "\n")
    out = tmp_path / "answers.jsonl"
    result = CliRunner().invoke(main, ["generate", "--backend", "ort", "--precision", "fp32", "--threads", "1",
                                       "--dataset", f"jsonl:{data}", "--model", str(lm_dir), "--max-new-tokens", "6",
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [answer] = [json.loads(line) for line in out.read_text().splitlines()]
    [expected] = hf.generate([reasoning_prompt("What is 2 + 3?")], max_new_tokens=6)
    assert answer["output_tokens"] == expected.output_tokens and answer["text"] == expected.text


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="precision"):
        ORTConfig(precision="int3")
    with pytest.raises(ValueError, match="threads"):
        ORTConfig(threads=0)


def test_evaluate_records_the_engine_and_its_precision_in_the_run_identity(lm_dir: Path, tmp_path: Path) -> None:
    """An int8 run must not resume an fp32 one: the precision is part of the engine's name."""
    from tale.cli import main
    from tale.eval.runs import read_meta, run_dirs

    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "5"}) + "\n")
    result = CliRunner().invoke(main, ["evaluate", "--backend", "ort", "--precision", "fp32", "--threads", "1", "--dataset", f"jsonl:{data}",
                                       "--model", str(lm_dir), "--max-new-tokens", "4", "--out", str(tmp_path / "eval")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [run] = run_dirs(tmp_path / "eval")
    assert read_meta(run)["identity"]["backend"] == "ort:fp32"


def test_a_missing_model_directory_is_a_one_line_error(tmp_path: Path) -> None:
    from tale.cli import main

    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "5"}) + "\n")
    result = CliRunner().invoke(main, ["generate", "--backend", "ort", "--dataset", f"jsonl:{data}",
                                       "--model", str(tmp_path / "typo"), "--out", str(tmp_path / "a.jsonl")])
    assert result.exit_code == 2
    assert "typo: no such model directory" in result.output and "Traceback" not in result.output
