"""The multi-sample label: one budget per question from k sampled searches (``tale build --samples K``).

One sampled answer length per question is a noisy label (docs/results/estimator-study.md measures how
noisy). ``median_records`` joins k searches of the same questions, one records directory each, into one
record per question:

- a question is feasible when more than half of its searches are (each search's vanilla answer is
  correct at least half the time otherwise, and a label from a minority of lucky samples is noise);
- its budget is the low median of the feasible searches' budgets (an actual searched budget, never an
  average no search tried), and the record written is that search's, so budget, reasoning and answer
  stay one quadruple; the other searches' budgets are kept in no field (the sample directories keep
  them);
- an infeasible question keeps its first search's record (feasible false).

Questions missing from any search are left out: the samples of a resumed build catch up first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from data_builder.record import RECORD_FORMAT, BudgetRecord
from data_builder.records import RecordWriter, Shard, load_records, record_files, shard_meta
from data_builder.run_dir import write_meta


def median_label(records: Sequence[BudgetRecord]) -> BudgetRecord:
    """One question's k records (one per search) -> the record that carries its multi-sample label."""
    ids = {r.id for r in records}
    if len(ids) != 1:
        raise ValueError(f"median_label takes one question's records, got ids {sorted(ids)}")
    feasible = sorted((r for r in records if r.feasible and r.budget is not None), key=lambda r: r.budget)
    if 2 * len(feasible) <= len(records):
        return next((r for r in records if not r.feasible), records[0])
    return feasible[(len(feasible) - 1) // 2]  # the low median


def median_records(directories: Sequence[Path], out: Path) -> tuple[Path, int]:
    """Write the multi-sample records of ``directories`` (k searches of the same questions) into
    ``out``, in the first directory's question order; returns the records file and how many questions
    were left out because some search has not reached them yet. Rewrites ``out`` each time."""
    if len(directories) < 2:
        raise ValueError("a multi-sample label needs at least 2 searches")
    searches = [load_records(d) for d in directories]
    by_id = [{r.id: r for r in records} for records in searches]
    complete = [r.id for r in searches[0] if all(r.id in m for m in by_id)]
    out.mkdir(parents=True, exist_ok=True)
    target = Shard().records_path(out)
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)  # a crash's leftover: the file is rewritten whole, never resumed
    with RecordWriter(partial) as writer:
        for problem_id in complete:
            writer.write(median_label([m[problem_id] for m in by_id]))
    partial.replace(target)
    first_meta = shard_meta(record_files(directories[0])[0])
    identity = json.loads(first_meta.read_text()).get("identity", {}) if first_meta and first_meta.exists() else {}
    identity = {k: v for k, v in identity.items() if k != "sampling_seed"}
    write_meta(Shard().meta_path(out), {"identity": {**identity, "label": f"median of {len(directories)}"},
                                        "record_format": RECORD_FORMAT, "samples_from": [str(d) for d in directories],
                                        "problems": len(complete)})
    return target, len(searches[0]) - len(complete)
