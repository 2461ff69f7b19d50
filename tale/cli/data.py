"""``tale generate``, ``tale build`` (budget searches, worked solutions, ladders), ``tale merge`` and ``tale
elasticity``: the commands that ask a reasoner questions and record what it answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from data_builder.build import BuildConfig
from data_builder.ladder import LadderBuildConfig, LadderConfig, rung_name
from data_builder.search import SEARCH_MODES, SearchConfig
from reasoner.backends import MAX_NEW_TOKENS
from tale.cli.common import DATASET, POSITIVE_INTS, SHARD, backend_options, ladder_option, setup

SEARCH = SearchConfig()  # the options' defaults
LADDER = LadderConfig()
LADDER_BUILD = LadderBuildConfig(dataset="", out=Path("."))


@click.command()
@click.option("--dataset", type=DATASET, required=True,
              help="KIND[:PATH]: gsm8k, gsm8k_zero, mathbench, generated, jsonl; e.g. gsm8k:path/to/gsm8k/test.jsonl.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N problems (after shuffling, with --seed).")
@click.option("--seed", type=int, default=None, help="Shuffle the problems with this seed before --limit.")
@click.option("--split", default="test", show_default=True, help="Split, for hub data sets.")
@click.option("--budget", type=click.IntRange(min=1), default=None, help="Budget-aware prompt: use less than N tokens.")
@click.option("--direct", is_flag=True, help="Ask for the answer without reasoning.")
@click.option("--skip-bad", is_flag=True, help="Skip and count bad data rows instead of stopping at the first.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=MAX_NEW_TOKENS, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/generate.jsonl"), show_default=True,
              help="JSONL of graded answers.")
@backend_options
def generate(dataset, limit, seed, split, budget, direct, skip_bad, max_new_tokens, out, model, engine, threads, verbose):
    """Ask a reasoner math questions and grade the answers.

    Example: tale generate --dataset gsm8k:path/to/gsm8k/test.jsonl --limit 8
    """
    if budget is not None and direct:
        raise click.UsageError("--budget and --direct exclude each other")
    setup(verbose, threads)
    from tqdm import tqdm

    from data_builder.sources import load_problems
    from tale.eval.answer import Summary, answer_problems, write_jsonl

    problems = load_problems(dataset, limit=limit, seed=seed, split=split, skip_bad=skip_bad)
    if problems.skipped:
        click.echo(f"skipped {len(problems.skipped)} bad rows (first: {problems.skipped[0]})", err=True)
    method = "direct" if direct else "budget" if budget is not None else "vanilla"
    backend = engine.build(model)
    answers = []
    stream = answer_problems(problems, backend, method=method, budget=budget, max_new_tokens=max_new_tokens, chunk=engine.batch_size)
    with tqdm(total=len(problems), desc=f"{method} {dataset}", unit="q") as bar:
        for answer in write_jsonl(out, stream):
            answers.append(answer)
            bar.update(1)
            mark = "correct" if answer.correct else "wrong  "
            bar.write(f"{mark} {answer.output_tokens:5d} tokens  predicted={answer.predicted!s:>10}  gold={answer.gold:>10}  {answer.id}")
    s = Summary.of(answers)
    click.echo(f"\n{s.n} questions, method {method}, model {model}: accuracy {s.accuracy:.1%}, "
               f"mean output tokens {s.mean_output_tokens:.1f} (over all samples)\nanswers written to {out}")



@click.command()
@click.option("--dataset", type=DATASET, required=True,
              help="KIND[:PATH], as for generate; e.g. gsm8k:path/to/gsm8k/train.jsonl.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Records directory (resumes if it exists).")
@click.option("--search", "mode", type=click.Choice([*SEARCH_MODES, "ladder", "reference", "equations"]), default=SEARCH.mode, show_default=True,
              help=("halving: the paper's search; elastic: also require fewer tokens each round; bisect: a tighter true bisection; "
                    "ladder: no search, every question at every --ladder rung, --samples answers each (an observed success curve); "
                    "reference: no search, the data set's worked solutions (gsm8k) with their length in --model's tokens as the budget, "
                    "a teacher for train-reasoner; equations: the same, but only the solutions' calculator equations "
                    "(less than half as long)."))
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use N problems (before sharding).")
@click.option("--seed", type=int, default=None, help="Shuffle the problems with this seed before --limit.")
@click.option("--split", default=BuildConfig.split, show_default=True, help="Split, for hub data sets.")
@click.option("--shard", type=SHARD, default="0/1", show_default=True, help="I/N: take slice I of N (0-based), for several machines.")
@click.option("--floor", type=click.IntRange(min=1), default=SEARCH.floor, show_default=True, help="No budget below this is tried.")
@click.option("--max-rounds", type=click.IntRange(min=1), default=SEARCH.max_rounds, show_default=True)
@click.option("--tolerance", type=click.IntRange(min=1), default=SEARCH.tolerance, show_default=True,
              help="bisect: stop when the bounds are this close.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=SEARCH.max_new_tokens, show_default=True)
@click.option("--pool", type=click.IntRange(min=1), default=None,
              help=f"Questions in flight; each round is one batched call over them [default: {BuildConfig.pool}; ladder: {LADDER_BUILD.pool}].")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help=("K > 1: search each question K times with sampling (needs --temperature above 0; seeds --sampling-seed, "
                    "+1, ...), each search in OUT/samples/seed-S, and write the median-of-K label to OUT (data_builder/labels.py). "
                    f"With --search ladder: answers per rung [default: 1; ladder: {LADDER.samples}]."))
@ladder_option
@click.option("--reuse", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
              help="--search ladder: search-record directories of the same reasoner and settings whose vanilla answers count as vanilla samples.")
@click.option("--push-to-hub", default=None,
              help="Also push the records to this hub data set repo (needs network and a token).")
@backend_options
def build(dataset, out, mode, limit, seed, split, shard, floor, max_rounds, tolerance, max_new_tokens, pool, samples, ladder_text, reuse,
          push_to_hub, model, engine, threads, verbose):
    """Search token budgets and record (question, budget, reasoning, answer) with the full trace.

    Example: tale build --dataset gsm8k:path/to/gsm8k/train.jsonl --limit 16 --out runs/records

    Success curves: tale build --search ladder --temperature 0.7 --dataset gsm8k:path/to/gsm8k/train.jsonl --limit 16 --out runs/ladder
    """
    if mode == "ladder":
        return _build_ladder(dataset, out, limit, seed, split, shard, max_new_tokens, pool, samples, ladder_text, reuse, model, engine,
                             threads, verbose)
    if reuse:
        raise click.UsageError("--reuse applies to --search ladder only")
    samples = samples or 1
    pool = pool or BuildConfig.pool
    setup(verbose, threads)
    from tqdm import tqdm

    from data_builder.build import build_records, summarize
    from data_builder.records import load_records
    from data_builder.reference import SEARCH_NAMES

    reference = {search: style for style, search in SEARCH_NAMES.items()}.get(mode)  # no search: a worked-solution style
    if reference and engine.kind == "openai":
        raise click.UsageError(f"--search {mode} counts tokens with --model's local tokenizer; use a local backend (ort or hf)")
    if samples > 1 and (reference or engine.temperature == 0):
        raise click.UsageError("--samples above 1 needs a search (not --search reference/equations) and --temperature above 0: "
                               "greedy searches of one question all find the same budget")
    config = BuildConfig(
        dataset=dataset, out=out, model=model, backend=engine.identity, limit=limit, seed=seed, split=split,
        shard=shard, pool=pool, reference=reference, temperature=engine.temperature,
        sampling_seed=engine.sampling_seed,
        search=SearchConfig(mode=SEARCH.mode if reference else mode, floor=floor, max_rounds=max_rounds, tolerance=tolerance,
                            max_new_tokens=max_new_tokens),
    )
    runs = [config] if samples == 1 else [
        dataclasses.replace(config, out=out / "samples" / f"seed-{config.sampling_seed + i}", sampling_seed=config.sampling_seed + i)
        for i in range(samples)]
    if reference:
        from data_builder.reference import tokenizer_counter

        backend, count_tokens = None, tokenizer_counter(model)
    else:
        backend, count_tokens = (engine.build(model) if samples == 1 else None), None
    spent = {"tokens": 0}
    with tqdm(desc="questions", unit="q") as bar:
        def on_record(record):
            spent["tokens"] += record.tokens_spent
            bar.update(1)
            bar.set_postfix(tokens=spent["tokens"])
            budget = record.budget if record.feasible else "infeasible"
            vanilla = record.vanilla_tokens
            bar.write(f"{budget!s:>10} budget  {'-' if vanilla is None else vanilla:>4} vanilla tokens  {record.calls} calls  {record.id}")

        def on_round(index, asked):
            bar.set_description(f"round {index}, {asked} asked")

        for run in runs:
            if samples > 1:  # each sample decodes with its own seed, so each gets a backend seeded with it
                bar.write(f"search into {run.out}")
                backend = None  # the previous sample's model is freed before the next loads
                backend = dataclasses.replace(engine, sampling_seed=run.sampling_seed).build(model)
            path = build_records(run, backend, on_record=on_record, on_round=on_round, count_tokens=count_tokens)
    if samples > 1:
        from data_builder.labels import median_records

        path, behind = median_records([run.out for run in runs], out)
        click.echo(f"median of {samples} searches written to {path}" + (f" ({behind} questions not searched by every sample yet)" if behind else ""))
    records = load_records(out)
    s = summarize(records)
    click.echo(f"\n{path}: {s['questions']} questions, feasible share {s.get('feasible_share', 0):.1%}")
    if "mean_vanilla_tokens_feasible" in s:
        click.echo(f"mean searched budget {s['mean_budget']:.1f} tokens against {s['mean_vanilla_tokens_feasible']:.1f} "
                   f"vanilla tokens (feasible questions)")
    elif "mean_budget" in s:
        click.echo(f"mean budget {s['mean_budget']:.1f} tokens")
    if s["questions"]:
        click.echo(f"spent per question: {s['calls_per_question']:.2f} calls, {s['tokens_per_question']:.0f} tokens")
    if push_to_hub:
        import datasets

        datasets.load_dataset("json", data_files=[str(p) for p in sorted(out.glob("records-*.jsonl"))], split="train").push_to_hub(push_to_hub)
        click.echo(f"pushed to {push_to_hub}")


def _build_ladder(dataset, out, limit, seed, split, shard, max_new_tokens, pool, samples, ladder_text, reuse, model, engine, threads,
                  verbose):
    from data_builder.ladder import LadderError, ladder_batching, parse_ladder

    try:
        config = LadderBuildConfig(
            dataset=dataset, out=out, model=model, backend=engine.identity, limit=limit, seed=seed, split=split, shard=shard,
            pool=pool or LADDER_BUILD.pool, **ladder_batching(engine.kind, engine.batch_size),
            temperature=engine.temperature,
            sampling_seed=engine.sampling_seed, reuse=tuple(reuse),
            ladder=LadderConfig(rungs=parse_ladder(ladder_text), samples=samples or LADDER.samples, max_new_tokens=max_new_tokens))
    except LadderError as error:
        raise click.UsageError(str(error)) from None
    setup(verbose, threads)
    from tqdm import tqdm

    from data_builder.ladder import build_ladder, load_ladder, summarize_ladder

    def backends():
        first = dataclasses.replace(engine, sampling_seed=config.seeds[0] or 0).build(model)
        reseed = getattr(first, "with_sampling_seed", None)  # vllm: one engine for every sample, not one each

        def other(seed):
            return reseed(seed or 0) if reseed else dataclasses.replace(engine, sampling_seed=seed or 0).build(model)

        return [(s, first if i == 0 else other(s)) for i, s in enumerate(config.seeds)]

    with tqdm(desc="questions", unit="q") as bar:
        def on_record(record):
            bar.update(1)
            curve = " ".join(f"{rung_name(r.budget)}:{sum(s.correct for s in r.samples)}/{len(r.samples)}" for r in record.rungs)
            bar.write(f"{curve}  {record.id}")

        def on_call(label, sample, asked):
            bar.set_description(f"rung {label}, sample {sample}, {asked} asked")

        path = build_ladder(config, backends, on_record=on_record, on_call=on_call, threads=threads)
    records = load_ladder(out)
    click.echo(f"\n{path}: {len(records)} questions in {out}")
    for row in summarize_ladder(records):
        click.echo(f"{row['rung']:>8}: accuracy {row['accuracy']:6.1%} over {row['samples']} samples, "
                   f"mean output tokens {row['mean_output_tokens']:.1f}")


@click.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="An empty directory for the merged records.")
def merge(shards, out):
    """Join shard record directories, refusing duplicates and mismatched runs.

    Example: tale merge runs/shard0 runs/shard1 --out runs/records
    """
    from data_builder.build import merge_shards

    path = merge_shards(list(shards), out)
    click.echo(f"merged {sum(1 for _ in open(path))} records into {path}")


@click.command()
@click.option("--records", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("elasticity.png"), show_default=True)
@click.option("--sweep", type=POSITIVE_INTS, default=None,
              help="Comma-separated budgets to ask every question at (a denser curve), e.g. 8,16,32,64,128,256.")
@click.option("--questions", type=click.IntRange(min=1), default=8, show_default=True, help="With --sweep: the first N feasible records.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=MAX_NEW_TOKENS, show_default=True)
@backend_options
def elasticity(records, out, sweep, questions, max_new_tokens, model, engine, threads, verbose):
    """Plot budget against actual output tokens per question (the paper's Fig. 2).

    Example: tale elasticity --records runs/records --out elasticity.png
    """
    setup(verbose, threads)
    import json

    from data_builder import elasticity as el
    from data_builder.records import load_records

    rows = load_records(records)
    if sweep:
        budgets = list(sweep)
        chosen = [r for r in rows if r.feasible][:questions]
        backend = engine.build(model)
        curves = el.sweep(chosen, backend, budgets, max_new_tokens)
    else:
        curves = el.curves_from_records(rows)
    el.plot(curves, out)
    data = out.with_suffix(".json")
    data.write_text(json.dumps([c.__dict__ for c in curves], indent=1) + "\n")
    click.echo(f"{len(curves)} questions plotted to {out}; points in {data}")
