"""``tale serve``: the budget-aware OpenAI-compatible gateway (``tale.serve.gateway``), on uvicorn."""

from __future__ import annotations

from pathlib import Path

import click

from tale.serve.config import POLICIES, GatewayConfig
from tale.serve.upstreams import UPSTREAM_KINDS, guess_kind

DEFAULTS = GatewayConfig(upstream="http://127.0.0.1:8000/v1")  # the options' defaults (the upstream is required)


@click.command("serve")
@click.option("--predictor", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="An export (tale export): of the BERT regressor (ONNX) or of TF-IDF (linear, well under a millisecond per estimate); "
              "calibrated, for --risk and the greedy allocation.")
@click.option("--upstream", required=True, help="The chat-completions server's API root, e.g. http://127.0.0.1:8000/v1.")
@click.option("--policy", type=click.Choice(POLICIES), default=DEFAULTS.policy, show_default=True,
              help="prompt: TALE-EP's budget line in the user message; cap: max_tokens = budget x --slack; both.")
@click.option("--risk", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Budgets that suffice for at least 1 - RISK of questions (the export's calibration) [default: uncalibrated].")
@click.option("--slack", type=click.FloatRange(min=1), default=DEFAULTS.slack, show_default=True, help="cap: the cap is the budget times this.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--window-ms", type=click.FloatRange(min=0), default=DEFAULTS.window_ms, show_default=True,
              help="Micro-batching: how long an estimate waits for others to share its onnxruntime call.")
@click.option("--max-batch", type=click.IntRange(min=1), default=DEFAULTS.max_batch, show_default=True, help="Questions per onnxruntime call.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=DEFAULTS.max_body_bytes, show_default=True,
              help="Larger request bodies get 413.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.timeout_s, show_default=True,
              help="Seconds the upstream may take to connect and for each read; then 504.")
@click.option("--request-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append each question and its budget here (JSONL); without it no request text is written anywhere.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default=DEFAULTS.precision, show_default=True,
              help="The export's model to run; int8's budgets shift a little with what shares their micro-batch.")
@click.option("--cache-size", type=click.IntRange(min=0), default=DEFAULTS.cache_size, show_default=True,
              help="Questions whose estimate is kept in memory (a repeated question is not estimated again); 0: none.")
@click.option("--threads", type=click.IntRange(min=1), default=DEFAULTS.threads, show_default=True, help="CPU threads of the ONNX estimator.")
@click.option("--upstream-kind", type=click.Choice([*UPSTREAM_KINDS, "auto"]), default=DEFAULTS.upstream_kind, show_default=True,
              help=("What the upstream is, so a thinking budget goes into the field it honours (docs/serve.md has the table); "
                    "auto guesses from the host or /v1/models and says what it guessed."))
@click.option("--answer-reserve", type=click.IntRange(min=0), default=DEFAULTS.answer_reserve, show_default=True,
              help="Thinking upstreams: tokens kept for the answer; the cap is at least the thinking budget plus this.")
@click.option("--max-questions", type=click.IntRange(min=1), default=DEFAULTS.max_questions, show_default=True,
              help="Questions in one /v1/budgets request; more is a 413. Long lists are estimated --max-batch at a time between chat requests.")
@click.option("--max-budget", type=click.IntRange(min=1), default=DEFAULTS.max_budget,
              help="The largest budget a request may ask for (tale_budget, X-TALE-Budget); larger is a 400. [default: the predictor's budget range top]")
@click.option("--curve-policy", default=DEFAULTS.curve_policy,
              help=("With a BERT curve estimator's ONNX export as --predictor: price=LAMBDA or target=SHARE picks each question's "
                    "rung from its predicted curve (0: answer directly, N: budget N, the top: vanilla, no budget)."))
@click.option("--graceful-cut", is_flag=True, default=DEFAULTS.graceful_cut,
              help=("A reply cut off by the token cap gets one more short turn (at most --answer-reserve tokens) asking for the "
                    "final answer, joined to it (non-streaming requests; docs/serve.md says what each server does at its limit)."))
@click.option("-v", "--verbose", is_flag=True, help="Log progress details (never request text or headers).")
def serve(predictor, upstream, policy, risk, slack, host, port, window_ms, max_batch, max_body_bytes, timeout_s, request_log,
          cache_size, precision, threads, upstream_kind, answer_reserve, max_questions, max_budget, curve_policy, graceful_cut, verbose):
    """Serve an OpenAI-compatible /v1/chat/completions that estimates each question's token budget and
    applies it before forwarding to --upstream; also /v1/budgets, /healthz and /metrics.

    Example: tale serve --predictor runs/pipeline/predictor-onnx --upstream http://127.0.0.1:8000/v1 --risk 0.1
    """
    import logging

    import uvicorn

    from tale.serve.app import create_app, load_gateway

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if upstream_kind == "auto":
        upstream_kind, why = guess_kind(upstream, read_models(upstream, timeout_s))
        click.echo(f"--upstream-kind auto: {upstream_kind} (from {why})", err=True)
    config = GatewayConfig(upstream=upstream, policy=policy, risk=risk, slack=slack, window_ms=window_ms,
                           max_batch=max_batch, max_body_bytes=max_body_bytes, timeout_s=timeout_s,
                           request_log=request_log, cache_size=cache_size, precision=precision, threads=threads,
                           max_questions=max_questions, max_budget=max_budget, upstream_kind=upstream_kind,
                           answer_reserve=answer_reserve, curve_policy=curve_policy, graceful_cut=graceful_cut)
    gateway = load_gateway(predictor, config)
    click.echo(f"tale serve on http://{host}:{port}/v1 -> {upstream} (policy {policy}, "
               f"{'risk ' + format(risk, 'g') if risk is not None else 'uncalibrated budgets'})", err=True)
    uvicorn.run(create_app(gateway), host=host, port=port, log_level="info" if verbose else "warning", access_log=False)


def read_models(upstream: str, timeout_s: float):
    """The upstream's ``/v1/models`` reply, parsed; None when it cannot be read (auto then decides without it)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(upstream.rstrip("/") + "/models", timeout=min(timeout_s, 10)) as reply:
            return json.loads(reply.read())
    except (OSError, ValueError):
        return None
