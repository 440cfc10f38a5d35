"""Load and back-pressure checks against Spaces running in their own process (tiny weights, 127.0.0.1 only).

- 32 concurrent clients x 5 requests to the CLIP Space's /classify: no failure, the server stays up, resident
  memory grows by at most 100 MB after warm-up; latency and throughput go to benchmarks/results/spaces_load.json.
- A Space started with a queue of 2 and one worker answers a flood of submissions beyond the queue with a quick
  "queue is full" error instead of letting them hang.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest

from tests.spaces.conftest import EXAMPLES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "spaces_load.json"
CLIP = "clip-vit-b32 (tiny)"
SAM = "sam-vit-base (tiny)"
CLIENTS = 32
REQUESTS_PER_CLIENT = 5
MAX_RSS_GROWTH_MB = 100
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def space_command(name: str, port: int) -> list[str]:
    return [sys.executable, "-m", "lmt.cli", "space", name, "--tiny", "--host", "127.0.0.1", "--port", str(port)]


def start_space(name: str, *, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, list[str]]:
    """Start ``lmt space <name> --tiny`` in a subprocess and wait until gradio_client can connect."""
    from gradio_client import Client

    port = free_port()
    command = space_command(name, port)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    env.pop("GRADIO_SERVER_NAME", None)
    env.pop("GRADIO_SERVER_PORT", None)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the {name} Space exited with {process.returncode} before answering")
        try:
            Client(url, verbose=False)
            return process, url, command
        except Exception:  # not listening yet
            time.sleep(0.5)
    stop(process)
    raise AssertionError(f"the {name} Space did not answer within {START_TIMEOUT_S} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def rss_mb(process: subprocess.Popen) -> float:
    return psutil.Process(process.pid).memory_info().rss / 2**20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def test_clip_space_under_concurrent_load():
    from gradio_client import Client, handle_file

    # The default queue (16 waiting) would rightly refuse some of 32 simultaneous clients; this measures serving.
    queue = {"LMT_QUEUE_MAX_SIZE": str(2 * CLIENTS), "LMT_CONCURRENCY_LIMIT": "2"}
    process, url, command = start_space("clip", extra_env=queue)
    try:
        warm = Client(url, verbose=False)
        for _ in range(5):
            warm.predict(handle_file(EXAMPLES / "cat.png"), "cat, dog, car", "a photo of a {}.", CLIP, "",
                         api_name="/classify")
        rss_before = rss_mb(process)

        def one_client(_: int) -> tuple[list[float], int]:
            client = Client(url, verbose=False)
            latencies, failures = [], 0
            for _ in range(REQUESTS_PER_CLIENT):
                start = time.perf_counter()
                try:
                    job = client.submit(handle_file(EXAMPLES / "cat.png"), "cat, dog, car", "a photo of a {}.",
                                        CLIP, "", api_name="/classify")
                    label, _raw = job.result(timeout=120)
                    assert {c["label"] for c in label["confidences"]} == {"cat", "dog", "car"}
                except Exception:
                    failures += 1
                latencies.append(time.perf_counter() - start)
            return latencies, failures

        started = time.perf_counter()
        latencies: list[float] = []
        failures = 0
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            for future in as_completed([pool.submit(one_client, i) for i in range(CLIENTS)], timeout=300):
                got, failed = future.result()
                latencies += got
                failures += failed
        elapsed = time.perf_counter() - started
        rss_after = rss_mb(process)

        assert process.poll() is None, "the server process died under load"
        assert failures == 0
        assert rss_after - rss_before <= MAX_RSS_GROWTH_MB, (rss_before, rss_after)

        total = CLIENTS * REQUESTS_PER_CLIENT
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([*(f"{k}={v}" for k, v in queue.items()), "lmt", *command[3:]]),
            "test": "pytest tests/spaces/test_load.py::test_clip_space_under_concurrent_load",
            "parameters": {
                "space": "clip", "endpoint": "/classify", "model": CLIP, "image": "examples/images/cat.png",
                "labels": "cat, dog, car", "clients": CLIENTS, "requests_per_client": REQUESTS_PER_CLIENT,
                "env": {**queue, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"},
                "cpu_count": os.cpu_count(),
            },
            "figures": {
                "requests": total, "failed": failures, "wall_s": round(elapsed, 2),
                "throughput_rps": round(total / elapsed, 2),
                "latency_p50_s": round(statistics.median(latencies), 3),
                "latency_p95_s": round(percentile(latencies, 0.95), 3),
                "latency_max_s": round(max(latencies), 3),
                "rss_after_warmup_mb": round(rss_before, 1), "rss_after_load_mb": round(rss_after, 1),
                "rss_growth_mb": round(rss_after - rss_before, 1),
            },
        }, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    finally:
        stop(process)


def test_full_queue_answers_busy_quickly():
    from gradio_client import Client, handle_file

    process, url, _ = start_space("sam", extra_env={"LMT_QUEUE_MAX_SIZE": "2", "LMT_CONCURRENCY_LIMIT": "1"})
    try:
        client = Client(url, verbose=False)
        cat = handle_file(EXAMPLES / "cat.png")
        flood_start = time.monotonic()
        jobs = [client.submit(cat, 8, 0.0, 0.0, SAM, api_name="/segment_everything") for _ in range(8)]
        finished_at: dict[int, float] = {}
        while len(finished_at) < len(jobs) and time.monotonic() - flood_start < 150:
            for index, job in enumerate(jobs):
                if index not in finished_at and job.done():
                    finished_at[index] = time.monotonic() - flood_start
            time.sleep(0.05)
        assert len(finished_at) == len(jobs), "some submissions hung"
        busy, done, other = [], [], []
        for index, job in enumerate(jobs):
            try:
                job.result(timeout=5)
                done.append(finished_at[index])
            except Exception as error:  # gradio_client raises QueueError("Queue is full! Please try again.")
                text = f"{type(error).__name__}: {error}"
                if "queue is full" in text.lower():
                    busy.append(finished_at[index])
                else:
                    other.append(text)
        assert busy and max(busy) < 10.0, busy  # refused at once, not after waiting for the slow jobs
        assert process.poll() is None
        # a dropped connection is the client's transport, not the server's answer; anything else is a failure
        unexpected = [text for text in other if not text.startswith(("RemoteProtocolError", "ConnectError"))]
        assert not unexpected, other
        assert busy, "no submission was told the queue is full"
        assert len(done) <= 1 + 2 + 2  # running + queued, plus slack for jobs that finished before the flood
        # a fresh request after the flood is served again
        _annotated, raw = client.predict(cat, 4, 0.0, 0.0, SAM, api_name="/segment_everything")
        assert raw["width"] == 451
    finally:
        stop(process)
