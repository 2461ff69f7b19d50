"""What ``tale serve`` adds to a request, side by side with calling the upstream directly.

    python bench/serve_overhead.py --predictor runs/predictor-reference-cal-onnx [--risk 0.1] [--precision fp32]
        [--requests 400] [--rss-requests 10000] [--out bench/results/serve_overhead.json]

Starts a fast upstream on 127.0.0.1 (tests/upstream_server.py, which answers at once) and ``tale serve``
in front of it (policy both), then at 1, 16 and 64 concurrent clients sends the same chat requests to
each, alternating direct and gateway rounds so both see the same machine load: latency p50 and p99 of
each and their difference (the gateway's added latency), and failed requests. The gateway side sends new
questions every round (none in its estimate cache); a ``cached`` side sends the same ones again (every
estimate remembered); a ``proxy`` side sends requests with their own budget (``tale_budget``), so the
gateway forwards without estimating: what the HTTP hop costs apart from the estimator. The RSS run
sends new questions too, so the cache fills to its bound. Then ``/v1/budgets``
throughput (questions per second) at batch 1 and 32 with 16 clients, the fairness run (chat requests with new
questions at 16 clients while one more client posts 1,024-question budget lists back to back, against the same run
without the lists; ``--fairness-only`` runs just this), and the gateway's resident memory
before and after ``--rss-requests`` more chat requests. For each side, the CPU milliseconds per request of
the client, the gateway and the upstream (from /proc): what the hop costs whatever the queueing. Records
the CPU count, the estimator's threads
and the load average. Loopback only; questions are GSM8K-like sentences generated here.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import click
import httpx

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO / "tests" / "upstream_server.py"
WORDS = ("apples", "bus", "students", "dollars", "hours", "pages", "cookies", "miles", "boxes", "tickets")


def questions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(['Tom', 'Ana', 'Lee'])} has {rng.randint(2, 90)} {rng.choice(WORDS)} and buys "
            f"{rng.randint(2, 9)} times as many {rng.choice(WORDS)} " * rng.randint(1, 4) + "How many in all?"
            for _ in range(n)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(command: list[str], health: str, log: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise click.ClickException(f"{command[:3]} exited:\n{log.read_text()}")
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


async def load(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], int]:
    """Send ``bodies`` with ``concurrency`` clients; per-request seconds and the failures. The load generator
    is aiohttp: httpx's async client spends about 9 times its CPU per request, which on 2 cores makes the
    client, not the servers, what a request waits for."""
    latencies, failures, queue = [], 0, list(reversed(bodies))
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as client:
        async def worker():
            nonlocal failures
            while queue:
                data = json.dumps(queue.pop()).encode()
                started = time.perf_counter()
                try:
                    async with client.post(url, data=data, headers={"Content-Type": "application/json"}) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                latencies.append(time.perf_counter() - started)
                failures += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failures


async def under_flood(chat_url: str, budgets_url: str, bodies: list[dict], concurrency: int, list_size: int,
                      flooded: bool) -> tuple[list[float], int, int]:
    """Chat requests at ``concurrency`` clients, while (``flooded``) one more client posts ``list_size``-question
    budget lists back to back; the chat latencies, their failures and how many lists were answered meanwhile."""
    stop, lists = asyncio.Event(), 0

    async def flood() -> None:
        nonlocal lists
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as client:
            while not stop.is_set():
                data = json.dumps({"questions": questions(list_size, seed=100_000 + lists)}).encode()
                async with client.post(budgets_url, data=data, headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    lists += response.status == 200

    task = asyncio.create_task(flood()) if flooded else None
    if task:
        await asyncio.sleep(0.5)  # the first list is with the estimator before the chat requests start
    latencies, failures = await load(chat_url, bodies, concurrency)
    stop.set()
    if task:
        await task
    return latencies, failures, lists


def fairness(chat_url: str, budgets_url: str, n: int, rounds: int, list_size: int = 1024, concurrency: int = 16) -> dict:
    """The chat side's latency with and without a client flooding /v1/budgets, quiet and flooded rounds alternating."""
    sides: dict[str, list[float]] = {"quiet": [], "flooded": []}
    failed, lists = 0, 0
    for round_ in range(rounds):
        for side in sides:
            fresh = [{"model": "echo", "messages": [{"role": "user", "content": q}]}
                     for q in questions(n, seed=50_000 + 10 * round_ + (side == "flooded"))]
            latencies, failures, answered = asyncio.run(under_flood(chat_url, budgets_url, fresh, concurrency, list_size,
                                                                    side == "flooded"))
            sides[side] += latencies
            failed += failures
            lists += answered
    row = {f"{side}_{name}_ms": round(1000 * quantile(values, q), 2) for side, values in sides.items()
           for name, q in (("p50", .5), ("p99", .99))}
    row |= {f"added_{name}_ms": round(row[f"flooded_{name}_ms"] - row[f"quiet_{name}_ms"], 2) for name in ("p50", "p99")}
    row |= {"p99_ratio": round(row["flooded_p99_ms"] / row["quiet_p99_ms"], 2), "failed": failed, "lists_answered": lists,
            "list_size": list_size, "concurrency": concurrency, "chat_requests_per_side": n * rounds}
    return row


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else values[0]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


@click.command()
@click.option("--predictor", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--risk", type=float, default=None)
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="The estimator's threads.")
@click.option("--requests", "n", type=int, default=400, show_default=True, help="Chat requests per round and side.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Alternating direct/gateway rounds per concurrency.")
@click.option("--rss-requests", type=int, default=10_000, show_default=True)
@click.option("--fairness-only", is_flag=True,
              help="Only the fairness run: chat requests at 16 clients with and without one client posting 1,024-question budget lists.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/serve_overhead.json"), show_default=True)
def main(predictor, risk, precision, threads, n, rounds, rss_requests, fairness_only, out):
    logs = Path(tempfile.mkdtemp(prefix="serve-overhead-"))  # the servers' output, shown when one fails to start
    up_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    gateway_cmd = [str(Path(sys.executable).with_name("tale")), "serve", "--predictor", str(predictor), "--upstream", upstream,
                   "--port", str(gw_port), "--precision", precision, "--threads", str(threads),
                   *(["--risk", str(risk)] if risk is not None else [])]
    result: dict = {"predictor": str(predictor), "precision": precision, "risk": risk, "estimator_threads": threads,
                    "cpus": os.cpu_count(), "load_average_start": os.getloadavg(), "requests_per_round": n,
                    "rounds": rounds, "concurrency": {}}
    with server([sys.executable, str(UPSTREAM), str(up_port)], f"http://127.0.0.1:{up_port}/health", logs / "upstream.log") as up, \
            server(gateway_cmd, f"http://127.0.0.1:{gw_port}/healthz", logs / "gateway.log") as gateway:
        bodies = [{"model": "echo", "messages": [{"role": "user", "content": q}]} for q in questions(n)]
        direct_url, gateway_url = f"{upstream}/chat/completions", f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        asyncio.run(load(gateway_url, bodies[:50], 4))  # warm both
        result["fairness"] = fairness(gateway_url, f"http://127.0.0.1:{gw_port}/v1/budgets", n, rounds)
        print(f"fairness (16 chat clients, one client posting 1,024-question lists): {result['fairness']}")
        if fairness_only:
            result["load_average_end"] = os.getloadavg()
            out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"saved {out}")
            return
        own = [{**body, "tale_budget": 100} for body in bodies]  # the request's own budget: no estimate, proxy only
        for concurrency in (1, 16, 64):
            sides: dict[str, list[float]] = {"direct": [], "gateway": [], "cached": [], "proxy": []}
            cpu = {side: {"client": 0.0, "gateway": 0.0, "upstream": 0.0} for side in sides}
            failed = 0
            for round_ in range(rounds):
                # new questions for every gateway round, so none is in the gateway's estimate cache; then the same again
                fresh = [{"model": "echo", "messages": [{"role": "user", "content": q}]}
                         for q in questions(n, seed=1000 * concurrency + round_ + 1)]
                for side, url, sent in (("direct", direct_url, bodies), ("gateway", gateway_url, fresh),
                                        ("cached", gateway_url, fresh), ("proxy", gateway_url, own)):
                    before = time.process_time(), cpu_seconds(gateway.pid), cpu_seconds(up.pid)
                    latencies, failures = asyncio.run(load(url, sent, concurrency))
                    after = time.process_time(), cpu_seconds(gateway.pid), cpu_seconds(up.pid)
                    for name, b, a in zip(("client", "gateway", "upstream"), before, after):
                        cpu[side][name] += a - b
                    sides[side] += latencies
                    failed += failures
            row = {f"{side}_{name}_ms": 1000 * quantile(values, q) for side, values in sides.items()
                   for name, q in (("p50", .5), ("p99", .99))}
            row["failed"] = failed
            for side in sides:  # CPU milliseconds per request of each process: what the hop costs, whatever the queueing
                for name, seconds in cpu[side].items():
                    row[f"{side}_cpu_{name}_ms"] = 1000 * seconds / len(sides[side])
            for name in ("p50", "p99"):
                for side in ("gateway", "cached", "proxy"):
                    row[f"{side}_added_{name}_ms"] = row[f"{side}_{name}_ms"] - row[f"direct_{name}_ms"]
            result["concurrency"][str(concurrency)] = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
            print(f"{concurrency:>3} clients: " + ", ".join(f"{k} {v}" for k, v in result["concurrency"][str(concurrency)].items()))

        result["budgets"] = {}
        for batch in (1, 32):
            pool = questions(batch * 64, seed=batch)
            requests_ = [{"questions": pool[i:i + batch]} for i in range(0, len(pool), batch)]
            started = time.perf_counter()
            latencies, failures = asyncio.run(load(f"http://127.0.0.1:{gw_port}/v1/budgets", requests_, 16))
            seconds = time.perf_counter() - started
            result["budgets"][str(batch)] = {"questions_per_s": round(len(pool) / seconds, 1), "failed": failures,
                                             "p50_ms": round(1000 * quantile(latencies, .5), 2)}
            print(f"/v1/budgets batch {batch}: {result['budgets'][str(batch)]}")

        before = rss_mb(gateway.pid)
        bulk = [{"model": "echo", "messages": [{"role": "user", "content": q}]} for q in questions(rss_requests, seed=7)]
        latencies, failures = asyncio.run(load(gateway_url, bulk, 16))
        result["rss"] = {"requests": rss_requests, "before_mb": before, "after_mb": rss_mb(gateway.pid), "failed": failures}
        print(f"resident memory over {rss_requests} requests: {result['rss']}")
    result["load_average_end"] = os.getloadavg()
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
