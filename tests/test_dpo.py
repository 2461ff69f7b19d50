"""DPO's pair rules on hand-made records, and the precomputed reference on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_post_train import CASES, LONG, SHORT, record, rounds, tiny_args

from data_builder.record import BudgetRecord
from reasoner.post_train import PostTrainConfig, SkipReason, build_adherence_pairs, build_dpo_dataset, make_trainer, rpo_loss

EQUATIONS = "48/2=24\n48+24=72\nAnswer: [[72]]"
WORKED = "Natalia sold 48/2 = 24 clips in May. Altogether she sold 48+24 = 72 clips. Answer: [[72]]"
OWN = "Let's see. " * 20 + SHORT


def adherence_records() -> list[BudgetRecord]:
    """Question q from three searches (its equations, its worked solution, the reasoner's own answers),
    question r from the reasoner's search only, and an infeasible record."""
    worked = {"vanilla_text": None, "vanilla_tokens": None, "vanilla_correct": None, "calls": 0}
    return [
        record("q", search="equations", budget=40, reasoning=EQUATIONS, trace=rounds((40, 40, True)), **worked),
        record("q", search="reference", budget=95, reasoning=WORKED, trace=rounds((95, 95, True)), **worked),
        record("q", search="elastic", budget=200, reasoning=OWN, vanilla_tokens=230,
               trace=rounds((None, 230, True), (200, 200, True))),
        record("r", budget=30, trace=rounds((None, 100, True), (30, 30, True))),
        CASES["infeasible"][0],
    ]


def test_adherence_pairs_reject_a_correct_answer_far_over_the_stated_budget() -> None:
    pairs = build_adherence_pairs(adherence_records(), slack=1.25, over=2.0)
    rows = {row["id"]: row for row in pairs.dataset}
    assert set(rows) == {"q#adherence", "r#adherence"}
    # q's equations (40 tokens) state ceil(1.25 x 40) = 50; correct answers over 100: the reasoner's 200 and its
    # vanilla 230, and the longest is rejected. Its worked solution (95 -> 119) and own answer (200 -> 250) have
    # no correct answer over 238 or 500 beside them.
    assert rows["q#adherence"]["chosen"][0]["content"] == EQUATIONS and rows["q#adherence"]["rejected"][0]["content"] == LONG
    assert "use less than 50 tokens" in rows["q#adherence"]["prompt"][-1]["content"]
    assert rows["r#adherence"]["chosen"][0]["content"] == SHORT and rows["r#adherence"]["rejected"][0]["content"] == LONG
    assert "use less than 38 tokens" in rows["r#adherence"]["prompt"][-1]["content"]
    assert pairs.counts.kept == 2
    assert pairs.counts.skipped == {SkipReason.INFEASIBLE: 1, SkipReason.NO_FAR_LONGER: 2}
    # at over = 8 nothing is far enough over
    assert build_adherence_pairs(adherence_records(), slack=1.25, over=8.0).counts.kept == 0


def test_both_pair_rules_together() -> None:
    vanilla = build_dpo_dataset(adherence_records(), "hindsight", 1.25, pairs="vanilla")
    both = build_dpo_dataset(adherence_records(), "hindsight", 1.25, pairs="both")
    assert len(vanilla.dataset) == 2  # the two worked records have no vanilla answer to reject
    assert vanilla.counts.skipped[SkipReason.NO_VANILLA] == 2
    assert len(both.dataset) == 4 and both.counts.examples == 4
    with pytest.raises(ValueError, match="pair rule"):
        build_dpo_dataset(adherence_records(), pairs="best")


def test_dpo_precomputes_the_reference_once_and_trains_the_adapter(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from reasoner.post_train import build_dpo_dataset as build

    config = PostTrainConfig(model=str(tiny_lm_dir), prompt_mode="hindsight", pairs="both", slack=1.25)
    args = tiny_args("dpo", output_dir=str(tmp_path / "scratch"))
    assert args.precompute_ref_log_probs  # the default for DPO
    dataset = build(adherence_records(), "hindsight", 1.25, pairs="both").dataset
    trainer = make_trainer("dpo", dataset, config, args)
    assert trainer.ref_model is None  # LoRA: the reference is the model with its adapters off, never a second copy
    before = {k: v.clone() for k, v in trainer.model.named_parameters() if "lora_B" in k}
    trainer.train()
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)  # computed once
    after = dict(trainer.model.named_parameters())
    assert any(not before[k].equal(after[k]) for k in before)  # the adapter moved in 2 steps


def test_max_examples_draws_a_seeded_subset_and_counts_it() -> None:
    from reasoner.post_train.train import draw_examples

    both = build_dpo_dataset(adherence_records(), "hindsight", 1.25, pairs="both")
    ids = set(both.dataset["id"])
    drawn = draw_examples(both, 2, seed=3)
    assert len(drawn.dataset) == 2 and set(drawn.dataset["id"]) <= ids
    assert drawn.counts.examples == 2 and drawn.counts.kept == both.counts.kept and "(2 examples)" in drawn.counts.describe()
    assert drawn.dataset["id"] == draw_examples(both, 2, seed=3).dataset["id"]  # the seed decides which
    assert {tuple(draw_examples(both, 2, seed=s).dataset["id"]) for s in range(8)} != {tuple(drawn.dataset["id"])}
    assert draw_examples(both, 4, seed=3) is both and draw_examples(both, None, seed=3) is both
    with pytest.raises(ValueError, match="max_examples"):
        PostTrainConfig(max_examples=0)


def test_sft_weight_adds_the_chosen_answers_nll_to_the_dpo_loss(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """RPO: the same 2 steps on the same pairs, with and without the NLL term; the first logged loss is
    DPO's plus the weight times the chosen answers' NLL (positive), so it is larger, by more for a larger weight."""
    config = PostTrainConfig(model=str(tiny_lm_dir), prompt_mode="hindsight", pairs="both", slack=1.25)
    dataset = build_dpo_dataset(adherence_records(), "hindsight", 1.25, pairs="both").dataset
    first_loss = {}
    for weight in (None, 1.0, 4.0):
        extra = rpo_loss(weight) if weight else {}
        trainer = make_trainer("dpo", dataset, config, tiny_args("dpo", output_dir=str(tmp_path / f"w{weight}"), seed=7, **extra))
        trainer.train()
        first_loss[weight] = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    assert tiny_args("dpo", **rpo_loss(0.5)).loss_weights == [1.0, 0.5]
    assert first_loss[None] < first_loss[1.0] < first_loss[4.0]
    with pytest.raises(ValueError, match="sft_weight"):
        rpo_loss(0)
