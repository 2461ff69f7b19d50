"""``tale export`` and ``tale estimate``: the budget regressor to ONNX, and budgets from the command line.

Both are plain click commands, registered on the ``tale`` group by ``tale.cli``. ``estimate`` on an
ONNX export directory imports neither torch nor transformers, so it runs in a light install
(``export/README.md``); a torch regressor directory works too, through ``predictor.load_estimator``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import Any

import click

from export.load import directory_kind
from export.manifest import MANIFEST_FILE, PRECISIONS, RuntimeConfig
from export.onnx import ExportConfig, export_curves, export_regressor
from predictor.curves import BERT_CURVES
from predictor.linear import LINEAR_FILE
from tale.cli.common import setup, torch_threads

CHUNK = 256  # questions read, estimated and written at a time, so long inputs stream


@click.command("export")
@click.option("--predictor", "source", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help=("A trained BERT regressor directory (tale train-predictor), a BERT curve estimator (tale train-curves "
                    "--estimator bert), or a TF-IDF regressor (linear export, no ONNX)."))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The export directory (created; an earlier export there is replaced).")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx: weights dynamically quantized to int8.")
@click.option("--int8-all", is_flag=True, help="int8: quantize the feed-forward down projections too (kept in fp32 by default): "
              "about 13% less latency, budgets further from fp32's (export/README.md).")
@click.option("--opset", type=click.IntRange(min=17), default=ExportConfig.opset, show_default=True, help="ONNX opset.")
@torch_threads("exports the regressor and runs it for the check")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def export(source: Path, out: Path, int8: bool, int8_all: bool, opset: int, threads: int | None, verbose: bool) -> None:
    """Export a trained budget regressor or BERT curve estimator to ONNX (fp32, and int8 with --int8), checked against
    torch; or a TF-IDF baseline to tale_linear.json (its numbers, read without scikit-learn or pickle).

    Example: tale export --predictor runs/predictor --out runs/predictor-onnx --int8
    """
    setup(verbose, threads)
    if directory_kind(source) == "tfidf-ridge":
        if int8 or int8_all:
            raise click.UsageError("--int8 is for the BERT regressor; a TF-IDF export is its exact numbers")
        from export.linear import export_tfidf

        linear = export_tfidf(source, out)
        click.echo(f"linear: {out / LINEAR_FILE} ({len(linear.weights)} terms, "
                   f"{'calibrated' if linear.calibration else 'not calibrated'})")
        return
    if int8_all and not int8:
        raise click.UsageError("--int8-all sets how --int8 quantizes; give --int8 too")
    config = ExportConfig(int8=int8, opset=opset, fp32_down_projections=not int8_all)
    curves = directory_kind(source) == BERT_CURVES
    manifest = (export_curves if curves else export_regressor)(source, out, config)
    for precision, exported in manifest.models.items():
        diff = manifest.check[f"{precision}_max_abs_diff"]
        click.echo(f"{precision}: {out / exported.file} ({exported.bytes / 2**20:.1f} MiB), "
                   f"max |ORT - torch| {diff:.2g} on {manifest.check['probes']} probe questions")
    click.echo(f"tokenizer and {MANIFEST_FILE} written to {out}")


def _question(row: Any, where: str, index: int) -> tuple[Any, str]:
    if not isinstance(row, dict) or not isinstance(row.get("question"), str):
        raise click.ClickException(f"{where}: expected an object with a string 'question', got {json.dumps(row)[:80]}")
    return row.get("id", index), row["question"]


def _json(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise click.ClickException(f"{where}: not JSON ({error})") from None


def read_questions(lines: Iterable[str], name: str, *, jsonl: bool) -> Iterator[tuple[Any, str]]:
    """(id, question) per non-blank line. JSONL lines (all with ``jsonl``, else those starting with '{')
    are objects with a question and an optional id; the id defaults to the question's 0-based index."""
    index = 0
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if jsonl or text.startswith("{"):
            yield _question(_json(text, f"{name}:{number}"), f"{name}:{number}", index)
        else:
            yield index, text
        index += 1


def _estimator(directory: Path, config: RuntimeConfig) -> Any:
    from export.load import load_any

    try:
        estimator = load_any(directory, config)  # a TF-IDF linear export loads with the standard library alone
    except ModuleNotFoundError as error:
        raise click.ClickException(f"{directory} is not an ONNX export (no {MANIFEST_FILE}) and loading it needs "
                                   f"{error.name}, which is not installed: export it with tale export") from None
    if config.threads and "torch" in sys.modules:  # the estimator runs on torch: before it runs, not before it loads
        import torch

        torch.set_num_threads(config.threads)
    return estimator


@click.command("estimate")
@click.argument("questions", nargs=-1)
@click.option("--predictor", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="An export directory (tale export: ONNX or TF-IDF linear; needs no torch) or a saved estimator directory.")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSONL of objects with 'question' and optional 'id'. Without it or QUESTIONs, stdin: one question per line, or JSONL.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=RuntimeConfig.precision,
              help="ONNX export: the model to run [default: int8 when exported, else fp32].")
@click.option("--threads", type=click.IntRange(min=0), default=RuntimeConfig.threads, show_default=True,
              help="CPU threads of the model: onnxruntime's for an ONNX export, else torch's (0: the engine's choice).")
@click.option("--batch-size", type=click.IntRange(min=1), default=RuntimeConfig.batch_size, show_default=True, help="ONNX export: questions per graph run.")
@click.option("--aim", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help=("Multiply each budget by this factor before rounding; 1.41 aims the estimate at the log-centre of [b*, 2b*], "
                    "so fewer budgets fall short."))
@click.option("--risk", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help=("A calibrated estimator's budgets at this risk: they suffice for at least 1 - RISK of new questions "
                    "(tale calibrate); as DIR%RISK in estimator names."))
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def estimate(questions: tuple[str, ...], directory: Path, input_path: Path | None, precision: str | None, threads: int,
             batch_size: int, aim: float, risk: float | None, verbose: bool) -> None:
    """Predict token budgets; one JSON line {"id", "budget"} per question on stdout.

    Example: tale estimate --predictor runs/predictor-onnx "What is 6 * 7?"

    Example: tale estimate --predictor runs/predictor-onnx --input questions.jsonl > budgets.jsonl
    """
    setup(verbose, None)  # threads go to the estimator's engine below
    if questions and input_path:
        raise click.UsageError("give QUESTIONs or --input, not both")
    stdin = sys.stdin
    if not questions and not input_path and stdin.isatty():
        raise click.UsageError("give QUESTIONs, --input FILE.jsonl, or questions on stdin")
    estimator = _estimator(directory, RuntimeConfig(precision=precision, threads=threads, batch_size=batch_size))
    if aim != 1.0 and risk is not None:
        raise click.UsageError("choose --risk or --aim, not both")
    if aim != 1.0:
        from predictor import Aimed

        estimator = Aimed(estimator, aim)
    if risk is not None:
        from predictor.calibrate import Calibrated, calibration_for

        estimator = Calibrated(estimator, calibration_for(estimator, directory), risk)
    with ExitStack() as stack:
        if questions:
            rows: Iterator[tuple[Any, str]] = iter(enumerate(questions))
        elif input_path:
            rows = read_questions(stack.enter_context(input_path.open(encoding="utf-8")), str(input_path), jsonl=True)
        else:
            rows = read_questions(stdin, "stdin", jsonl=False)
        while chunk := list(islice(rows, CHUNK)):
            for (key, _), budget in zip(chunk, estimator.predict([q for _, q in chunk])):
                click.echo(json.dumps({"id": key, "budget": budget}))
