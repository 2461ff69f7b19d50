"""TALE-PT: training sets from hand-made records, SFT and DPO for two steps on a tiny model, merged saves."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import budget_record, transformers_serve

from data_builder.record import BudgetRecord, SearchRound
from reasoner.post_train import (
    RUN_CONFIG,
    PostTrainConfig,
    SkipReason,
    build_dpo_dataset,
    build_sft_dataset,
    chosen_tokens,
    dpo_skip_reason,
    make_trainer,
    post_train,
    records_fingerprint,
    sft_skip_reason,
    trainer_args,
    training_prompt,
)
from reasoner.prompts import reasoning_prompt
from tale.cli import main

QUESTION = "Natalia sold 48 clips in April and half as many in May. How many in total?"
SHORT = "48 / 2 = 24. 48 + 24 = 72. Answer: [[72]]"
LONG = "First, 48 / 2 = 24 clips in May. Then 48 + 24 = 72 clips in total. The answer is 72. Answer: [[72]]"


def rounds(*steps: tuple[int | None, int, bool]) -> tuple[SearchRound, ...]:
    """Trace rounds from (budget, output tokens, correct)."""
    return tuple(SearchRound(budget, tokens, correct, "72" if correct else "70", 20) for budget, tokens, correct in steps)


def record(id: str, **fields: Any) -> BudgetRecord:
    """A feasible record whose answer under budget 50 took 30 tokens against 100 for the vanilla one."""
    base = budget_record(id, question=QUESTION, gold="72", budget=50, reasoning=SHORT, predicted="72",
                         vanilla_text=LONG, vanilla_tokens=100, vanilla_correct=True,
                         trace=rounds((None, 100, True), (50, 30, True), (25, 20, False)), calls=3)
    return replace(base, **fields)


VANILLA_ONLY = rounds((None, 100, True), (50, 40, False))

# id -> (record, SFT verdict, DPO verdict); None keeps the record.
CASES: dict[str, tuple[BudgetRecord, SkipReason | None, SkipReason | None]] = {
    "keep": (record("keep"), None, None),
    "one-shorter": (record("one-shorter", trace=rounds((None, 100, True), (50, 99, True))), None, None),
    "choice-zh": (record("choice-zh", kind="choice", options=("70", "72"), language="zh", reasoning="[[B]]",
                         vanilla_text="很长的推理 [[B]]"), None, None),
    "infeasible": (record("infeasible", feasible=False, budget=None, reasoning=None, predicted=None,
                          vanilla_correct=False, trace=rounds((None, 100, False))),
                   SkipReason.INFEASIBLE, SkipReason.INFEASIBLE),
    "no-reasoning": (record("no-reasoning", reasoning=None), SkipReason.NO_REASONING, SkipReason.NO_REASONING),
    "no-budget": (record("no-budget", budget=None), SkipReason.NO_REASONING, SkipReason.NO_REASONING),
    "no-vanilla": (record("no-vanilla", vanilla_text=""), None, SkipReason.NO_VANILLA),
    # No budget below the vanilla token count held: the answer under beta* is the vanilla answer.
    "vanilla-is-answer": (record("vanilla-is-answer", budget=100, reasoning=LONG, trace=VANILLA_ONLY),
                          None, SkipReason.SAME_AS_VANILLA),
    "same-text": (record("same-text", reasoning=LONG), None, SkipReason.SAME_AS_VANILLA),
    "no-trace-round": (record("no-trace-round", trace=VANILLA_ONLY), None, SkipReason.NO_TOKEN_COUNT),
    "longer": (record("longer", trace=rounds((None, 100, True), (50, 161, True))), None, SkipReason.NOT_SHORTER),
    "as-long": (record("as-long", trace=rounds((None, 100, True), (50, 100, True))), None, SkipReason.NOT_SHORTER),
}
RECORDS = [case[0] for case in CASES.values()]


@pytest.mark.parametrize("name", list(CASES))
def test_each_filtering_rule(name: str) -> None:
    rec, sft, dpo = CASES[name]
    assert sft_skip_reason(rec) is sft
    assert dpo_skip_reason(rec) is dpo


def test_chosen_tokens_come_from_the_budget_round_or_the_vanilla_answer() -> None:
    assert chosen_tokens(CASES["keep"][0]) == 30
    assert chosen_tokens(CASES["longer"][0]) == 161
    assert chosen_tokens(CASES["vanilla-is-answer"][0]) == 100
    assert chosen_tokens(CASES["no-trace-round"][0]) is None


def expected(column: int) -> tuple[list[str], dict[SkipReason, int]]:
    kept = [name for name, case in CASES.items() if case[column] is None]
    skipped: dict[SkipReason, int] = {}
    for case in CASES.values():
        if case[column] is not None:
            skipped[case[column]] = skipped.get(case[column], 0) + 1
    return kept, skipped


def test_sft_set_budget_conditioned() -> None:
    built = build_sft_dataset(RECORDS)
    kept, skipped = expected(1)
    assert list(built.dataset["id"]) == kept
    assert built.counts.kept == len(kept) and dict(built.counts.skipped) == skipped
    assert built.counts.total == len(RECORDS)
    assert set(built.dataset.column_names) == {"id", "prompt", "completion"}
    row = built.dataset[0]
    assert row["prompt"] == [{"role": "user", "content": reasoning_prompt(QUESTION, method="budget", budget=50).user}]
    assert "use less than 50 tokens" in row["prompt"][0]["content"]
    assert row["completion"] == [{"role": "assistant", "content": SHORT}]
    zh = built.dataset[kept.index("choice-zh")]["prompt"][0]["content"]
    assert "B. 72" in zh and "使用少于 50 个 token" in zh
    assert built.dataset[kept.index("vanilla-is-answer")]["completion"][0]["content"] == LONG


def test_internalized_prompts_carry_no_budget() -> None:
    sft, dpo = build_sft_dataset(RECORDS, "internalized"), build_dpo_dataset(RECORDS, "internalized")
    assert sft.counts == build_sft_dataset(RECORDS).counts  # the mode changes prompts, not the selection
    for prompt in list(sft.dataset["prompt"]) + list(dpo.dataset["prompt"]):
        text = prompt[0]["content"]
        assert "use less than" not in text and "使用少于" not in text and "50" not in text.split("\n")[-1]
    assert sft.dataset[0]["prompt"][0]["content"] == reasoning_prompt(QUESTION).user


def stated_budget(prompt: list[dict[str, str]]) -> int:
    [budget] = re.findall(r"use less than (\d+) tokens|使用少于 (\d+) 个 token", prompt[0]["content"])
    return int("".join(budget))


def test_hindsight_prompts_state_each_answers_own_tokens() -> None:
    built = build_sft_dataset(RECORDS, "hindsight")
    # The answer under beta* with its trace round's tokens; the vanilla answer (100 tokens) beside it when
    # it is another text. no-trace-round has no count for its answer, so it is skipped.
    assert {row["id"]: stated_budget(row["prompt"]) for row in built.dataset} == {
        "keep": 30, "keep#vanilla": 100, "one-shorter": 99, "one-shorter#vanilla": 100,
        "choice-zh": 30, "choice-zh#vanilla": 100, "no-vanilla": 30, "vanilla-is-answer": 100, "same-text": 30,
        "longer": 161, "longer#vanilla": 100, "as-long": 100, "as-long#vanilla": 100}
    assert [row["completion"][0]["content"] for row in built.dataset][:2] == [SHORT, LONG]
    assert built.counts.skipped == {SkipReason.INFEASIBLE: 1, SkipReason.NO_REASONING: 2, SkipReason.NO_TOKEN_COUNT: 1}
    assert built.counts.describe().startswith("8 of 12 records kept (13 examples)")
    assert built.counts.to_json()["examples"] == 13
    dpo = build_dpo_dataset(RECORDS, "hindsight")
    assert {row["id"]: stated_budget(row["prompt"]) for row in dpo.dataset} == {"keep": 30, "one-shorter": 99, "choice-zh": 30}
    with pytest.raises(ValueError, match="'no-trace-round': no output token count"):
        training_prompt(CASES["no-trace-round"][0], "hindsight")


def test_hindsight_slack_states_more_than_each_answers_tokens_rounded_up() -> None:
    exact = {row["id"]: stated_budget(row["prompt"]) for row in build_sft_dataset(RECORDS, "hindsight").dataset}
    slack = {row["id"]: stated_budget(row["prompt"]) for row in build_sft_dataset(RECORDS, "hindsight", 1.25).dataset}
    assert slack == {key: math.ceil(tokens * 1.25) for key, tokens in exact.items()}
    assert slack["keep"] == 38 and slack["keep#vanilla"] == 125 and slack["longer"] == 202  # 37.5, 125, 201.25
    dpo = build_dpo_dataset(RECORDS, "hindsight", 1.25)
    assert {row["id"]: stated_budget(row["prompt"]) for row in dpo.dataset} == {"keep": 38, "one-shorter": 124, "choice-zh": 38}
    with pytest.raises(ValueError, match="slack must be a finite number >= 1"):
        PostTrainConfig(prompt_mode="hindsight", slack=0.8)
    with pytest.raises(ValueError, match="hindsight prompts and adherence pairs only"):
        PostTrainConfig(prompt_mode="budget", slack=1.25)


def test_reference_records_train_every_mode_and_make_no_dpo_pairs() -> None:
    from data_builder.reference import reference_record
    from data_builder.sources import Problem, problem_id

    problem = Problem(problem_id("gsm8k", QUESTION), QUESTION, "72", source="gsm8k", solution="48 / 2 = 24. 48 + 24 = 72.")
    reference = reference_record(problem, lambda text: 17, model="tiny", backend="hf", prompt_version="tale-prompts-v1",
                                 search="reference", seed=None)
    for mode in ("budget", "hindsight"):  # both state the solution's own length
        [row] = build_sft_dataset([reference], mode).dataset
        assert stated_budget(row["prompt"]) == 17
        assert row["completion"][0]["content"] == "48 / 2 = 24. 48 + 24 = 72.\nAnswer: [[72]]"
    assert "use less than" not in build_sft_dataset([reference], "internalized").dataset[0]["prompt"][0]["content"]
    assert build_dpo_dataset([reference]).counts.skipped == {SkipReason.NO_VANILLA: 1}


def test_dpo_set_prefers_the_shorter_budgeted_answer() -> None:
    built = build_dpo_dataset(RECORDS)
    kept, skipped = expected(2)
    assert list(built.dataset["id"]) == kept == ["keep", "one-shorter", "choice-zh"]
    assert dict(built.counts.skipped) == skipped
    assert built.counts.to_json()["skipped"]["same_as_vanilla"] == 2
    assert set(built.dataset.column_names) == {"id", "prompt", "chosen", "rejected"}
    row = built.dataset[0]
    assert "use less than 50 tokens" in row["prompt"][0]["content"]
    assert row["chosen"] == [{"role": "assistant", "content": SHORT}]
    assert row["rejected"] == [{"role": "assistant", "content": LONG}]


def test_fingerprint_ignores_order_and_sees_content() -> None:
    assert records_fingerprint(RECORDS) == records_fingerprint(RECORDS[::-1])
    assert records_fingerprint(RECORDS) != records_fingerprint([*RECORDS[:-1], record("as-long", budget=49)])


def test_trainer_args_paper_defaults_and_overrides() -> None:
    sft, dpo = trainer_args("sft"), trainer_args("dpo", learning_rate=1e-3, gradient_checkpointing=True)
    assert (sft.num_train_epochs, sft.per_device_train_batch_size, sft.learning_rate, sft.weight_decay) == (3, 16, 1e-4, 0.01)
    assert (dpo.num_train_epochs, dpo.weight_decay, dpo.beta, dpo.learning_rate) == (2, 0.001, 0.5, 1e-3)
    assert dpo.gradient_checkpointing is True  # the old name still reaches the trainer
    assert sft.use_cpu and not sft.bf16 and not sft.gradient_checkpointing  # no GPU here
    assert sft.save_strategy == "no"
    with pytest.raises(ValueError, match="prompt_mode"):
        PostTrainConfig(prompt_mode="budgeted")


TRAIN = [record(f"r{i}", question=f"{QUESTION} ({i})") for i in range(4)]


def tiny_args(method: str, **overrides: Any):
    return trainer_args(method, max_steps=2, per_device_train_batch_size=2, max_length=128, learning_rate=1e-3,
                        logging_steps=1, disable_tqdm=True, **overrides)


def weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(directory / "model.safetensors")


Q_PROJ = "model.layers.0.self_attn.q_proj.weight"
K_PROJ = "model.layers.0.self_attn.k_proj.weight"
MLP = "model.layers.0.mlp.up_proj.weight"


def test_sft_loss_is_on_the_completion_only(tiny_lm_dir: Path, tmp_path: Path) -> None:
    built = build_sft_dataset(TRAIN[:2])
    trainer = make_trainer("sft", built.dataset, PostTrainConfig(model=str(tiny_lm_dir), lora=False),
                           tiny_args("sft", output_dir=str(tmp_path)))
    tokenizer = trainer.processing_class
    examples = [trainer.train_dataset[i] for i in range(2)]
    batch = trainer.data_collator([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
    for i, (example, source) in enumerate(zip(examples, built.dataset)):
        prompt = tokenizer.apply_chat_template(source["prompt"], add_generation_prompt=True, tokenize=False)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
        labels = batch["labels"][i].tolist()
        assert labels[:n_prompt] == [-100] * n_prompt
        n = len(example["input_ids"])
        assert labels[n_prompt:n] == example["input_ids"][n_prompt:]
        assert all(label == -100 for label in labels[n:])  # padding
        # The completion ends with the end-of-turn token, so the model learns to stop.
        assert tokenizer.decode(labels[n_prompt:n]) == SHORT + "<|im_end|>\n"


def test_sft_full_two_steps_changes_weights(tiny_lm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft-full"
    result = post_train("sft", TRAIN, out, PostTrainConfig(model=str(tiny_lm_dir), lora=False), tiny_args("sft"),
                        source=["hand-made"])
    assert result.counts.kept == 4 and result.metrics["train_loss"] > 0
    before, after = weights(tiny_lm_dir), weights(out)
    assert not before[MLP].equal(after[MLP]) and not before[K_PROJ].equal(after[K_PROJ])
    run = json.loads((out / RUN_CONFIG).read_text())
    assert run["method"] == "sft" and run["config"]["lora"] is False and run["config"]["prompt_mode"] == "budget"
    assert run["trainer_args"]["learning_rate"] == 1e-3 and run["trainer_args"]["max_steps"] == 2
    assert "hub_token" not in run["trainer_args"] and run["trainer_args"]["output_dir"] is None
    assert run["records"] == {"source": ["hand-made"], "sha256": records_fingerprint(TRAIN), "n": 4}
    assert run["counts"] == {"kept": 4, "examples": 4, "skipped": {}}
    with pytest.raises(FileExistsError):
        post_train("sft", TRAIN, out, PostTrainConfig(model=str(tiny_lm_dir)), tiny_args("sft"))


def test_dpo_full_uses_a_loaded_reference_and_changes_weights(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = PostTrainConfig(model=str(tiny_lm_dir), lora=False)
    built = build_dpo_dataset(TRAIN)
    trainer = make_trainer("dpo", built.dataset, config, tiny_args("dpo", output_dir=str(tmp_path / "scratch")))
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    batch = trainer.data_collator([trainer.train_dataset[0]])
    n_prompt = len(trainer.train_dataset[0]["prompt_ids"])
    assert batch["completion_mask"][:, :n_prompt].sum() == 0 and batch["completion_mask"][:, n_prompt:].sum() > 0

    out = tmp_path / "dpo-full"
    post_train("dpo", TRAIN, out, config, tiny_args("dpo"))
    assert not weights(tiny_lm_dir)[MLP].equal(weights(out)[MLP])
    assert json.loads((out / RUN_CONFIG).read_text())["trainer_args"]["beta"] == 0.5


def test_dpo_lora_merges_into_the_targets_only(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = PostTrainConfig(model=str(tiny_lm_dir), prompt_mode="internalized", max_examples=1)
    args = tiny_args("dpo", output_dir=str(tmp_path / "scratch"))
    assert make_trainer("dpo", build_dpo_dataset(TRAIN).dataset, config, args).ref_model is None
    assert len(build_dpo_dataset(TRAIN).dataset) > 1
    out = tmp_path / "dpo-lora"
    post_train("dpo", TRAIN, out, config, tiny_args("dpo"))
    before, after = weights(tiny_lm_dir), weights(out)
    assert not before[Q_PROJ].equal(after[Q_PROJ])  # the merged adapter
    assert before[K_PROJ].equal(after[K_PROJ]) and before[MLP].equal(after[MLP])  # not LoRA targets
    assert not (out / "adapter_config.json").exists()
    run = json.loads((out / RUN_CONFIG).read_text())
    assert run["config"]["prompt_mode"] == "internalized" and run["config"]["max_examples"] == 1
    assert run["counts"]["examples"] == 1  # trained on the one drawn pair


def write_records(directory: Path, records: list[BudgetRecord]) -> Path:
    from data_builder.records import RecordWriter, Shard

    with RecordWriter(Shard().records_path(directory)) as writer:
        for r in records:
            writer.write(r)
    return directory


def test_cli_sft_lora_saves_a_plain_model_that_loads_and_serves(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from reasoner.backends.hf import HFBackend, HFConfig
    from reasoner.backends.openai import OpenAIBackend, OpenAIConfig

    records = write_records(tmp_path / "records", [*TRAIN, CASES["infeasible"][0]])
    out = tmp_path / "sft-lora"
    result = CliRunner().invoke(main, ["train-reasoner",
        "sft", "--records", str(records), "--model", str(tiny_lm_dir), "--out", str(out), "--max-steps", "2",
        "--batch-size", "2", "--learning-rate", "1e-3", "--max-length", "128"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "4 of 5 records kept; skipped: 1 infeasible" in result.output
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", RUN_CONFIG} <= files
    assert not {f for f in files if f.startswith("adapter_")}  # the model dir is plain; the adapter sits in adapter/
    assert {p.name for p in (out / "adapter").iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] is None  # no local path
    assert "chat_template.jinja" in files or "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    before, after = weights(tiny_lm_dir), weights(out)
    assert not before[Q_PROJ].equal(after[Q_PROJ]) and before[K_PROJ].equal(after[K_PROJ])
    assert not any("lora" in name for name in after)
    run = json.loads((out / RUN_CONFIG).read_text())
    assert run["records"]["source"] == [str(records)] and run["counts"]["skipped"] == {"infeasible": 1}
    assert run["config"]["lora_r"] == 8 and run["config"]["target_modules"] == ["q_proj", "v_proj"]

    prompt = reasoning_prompt(QUESTION, method="budget", budget=50)
    [local] = HFBackend(HFConfig(model=str(out), device="cpu")).generate([prompt], max_new_tokens=6)
    assert 1 <= local.output_tokens <= 6
    # transformers serve (and so vLLM and the like) loads it as a plain model: greedy, the same tokens.
    with transformers_serve(out, tmp_path / "serve.log") as base_url, \
            OpenAIBackend(OpenAIConfig(model=str(out), base_url=base_url)) as served:
        [remote] = served.generate([prompt], max_new_tokens=6)
    assert (remote.text, remote.output_tokens) == (local.text, local.output_tokens)


def test_cli_help_and_errors(tiny_lm_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert "Example: tale train-reasoner" in runner.invoke(main, ["train-reasoner", "--help"]).output
    records = write_records(tmp_path / "records", [CASES["infeasible"][0], CASES["longer"][0]])
    result = runner.invoke(main, ["train-reasoner", "dpo", "--records", str(records), "--model", str(tiny_lm_dir),
                                            "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no dpo training examples" in result.output
    assert "1 infeasible" in result.output and "1 not_shorter" in result.output
    result = runner.invoke(main, ["train-reasoner", "sft", "--records", str(records), "--out", str(tmp_path / "out"),
                                            "--internalized", "--hindsight"])
    assert result.exit_code == 2 and "exclude each other" in result.output
    result = runner.invoke(main, ["train-reasoner", "sft", "--records", str(records), "--out", str(tmp_path / "out"), "--slack", "1.25"])
    assert result.exit_code == 2 and "--slack applies to --hindsight prompts and dpo --pairs adherence only" in result.output
    result = runner.invoke(main, ["train-reasoner", "sft", "--records", str(records), "--out", str(tmp_path / "out"), "--sft-weight", "1"])
    assert result.exit_code == 2 and "--sft-weight weighs an NLL term beside the DPO loss" in result.output


def test_rebuild_from_the_committed_files_gives_the_trained_weights(tiny_lm_dir: Path, tmp_path: Path) -> None:
    import shutil

    import torch


    trained = tmp_path / "sft-lora"
    post_train("sft", TRAIN, trained, PostTrainConfig(model=str(tiny_lm_dir)), tiny_args("sft"))
    committed = tmp_path / "artifact"  # what a repository keeps: the run config and the adapter, no weights
    committed.mkdir()
    shutil.copy(trained / RUN_CONFIG, committed / RUN_CONFIG)
    shutil.copytree(trained / "adapter", committed / "adapter")
    runner = CliRunner()
    result = runner.invoke(main, ["rebuild-reasoner", "--from", str(committed), "--out", str(tmp_path / "rebuilt")])
    assert result.exit_code == 0, result.output
    expected, rebuilt = weights(trained), weights(tmp_path / "rebuilt")
    assert expected.keys() == rebuilt.keys() and not weights(tiny_lm_dir)[Q_PROJ].equal(rebuilt[Q_PROJ])
    assert all(torch.allclose(expected[k], rebuilt[k], atol=1e-6) for k in expected)
    assert json.loads((tmp_path / "rebuilt" / RUN_CONFIG).read_text())["rebuilt_from"] == str(committed)

    result = runner.invoke(main, ["rebuild-reasoner", "--from", str(committed), "--out", str(tmp_path / "rebuilt")])
    assert result.exit_code == 2 and "is not empty" in result.output
    shutil.rmtree(committed / "adapter")
    result = runner.invoke(main, ["rebuild-reasoner", "--from", str(committed), "--out", str(tmp_path / "again")])
    assert result.exit_code == 2 and "no LoRA adapter" in result.output

