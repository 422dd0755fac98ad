"""Load benchmark of `codecl serve`: latency and throughput over loopback, with micro-batching on and off.

For each setting it starts the real server (`python -m codecl serve RUN_DIR --port 0 --max-batch B`)
as a subprocess, waits for /healthz, sends a few warm-up requests, then a bounded number of
requests (default 64) from a pool of client threads in this process (default concurrency 8),
spread over the run's languages and its validation prompts, and stops the server. It prints a
table and, last, one JSON line with every figure.

    python bench/serve_load.py runs/quickstart [--method hybrid] [--requests 64] [--concurrency 8]

Latency is measured by the client (send to full answer); requests/s is requests / wall time of
the timed phase. `batches` and `mean batch` come from the server's /v1/stats.
"""
from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def prompts_of(run_dir: Path, count: int) -> list[tuple[str, str]]:
    """(language, description) pairs from the run's validation split, languages interleaved."""
    from codecl.config import from_dict
    from codecl.data.tasks import load_pairs

    cfg = from_dict(json.loads((run_dir / "results.json").read_text())["config"])
    per_language = {lang: [p.source for p in load_pairs(cfg.data, lang, cfg.eval.split)] for lang in cfg.tasks}
    out = []
    for i in range(count):
        lang = cfg.tasks[i % len(cfg.tasks)]
        sources = per_language[lang]
        out.append((lang, sources[(i // len(cfg.tasks)) % len(sources)]))
    return out


class ServerProcess:
    def __init__(self, run_dir: Path, extra: list[str]):
        cmd = [sys.executable, "-m", "codecl", "serve", str(run_dir), "--port", "0", "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        try:
            first = lines.get(timeout=300)
        except queue.Empty:
            self.proc.kill()
            raise SystemExit(f"server did not start: {self.proc.stderr.read()[-2000:]}")
        if "http://" not in first:
            self.proc.kill()
            raise SystemExit(f"server did not start: {first}{self.proc.stderr.read()[-2000:]}")
        self.url = first.split()[-1]
        self.announce = first.strip()

    def call(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(run_dir: Path, server_args: list[str], work: list[tuple[str, str]], concurrency: int, max_new_tokens: int | None) -> dict:
    server = ServerProcess(run_dir, server_args)
    try:
        for _ in range(20):
            try:
                server.call("/healthz")
                break
            except OSError:
                time.sleep(0.2)

        def one(item):
            language, prompt = item
            body = {"language": language, "prompt": prompt, **({"max_new_tokens": max_new_tokens} if max_new_tokens else {})}
            started = time.perf_counter()
            server.call("/v1/generate", body)
            return (time.perf_counter() - started) * 1000

        for item in work[:concurrency]:  # warm-up, one at a time: first calls pay one-off costs
            one(item)
        before = server.call("/v1/stats")
        with ThreadPoolExecutor(concurrency) as pool:
            started = time.perf_counter()
            latencies = list(pool.map(one, work))
            wall_s = time.perf_counter() - started
        after = server.call("/v1/stats")
    finally:
        server.stop()
    batches = after["batches"] - before["batches"]
    return {"server": server.announce, "max_batch": after["max_batch"], "max_wait_ms": after["max_wait_ms"],
            "requests": len(work), "concurrency": concurrency, "wall_s": round(wall_s, 3),
            "requests_per_s": round(len(work) / wall_s, 2), "p50_ms": round(percentile(latencies, 50), 1),
            "p95_ms": round(percentile(latencies, 95), 1), "mean_ms": round(statistics.fmean(latencies), 1),
            "batches": batches, "mean_batch": round((after["requests"] - before["requests"]) / max(batches, 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="A finished run folder (codecl run --output-dir DIR).")
    parser.add_argument("--method", help="Method to serve (default: the server's choice, the best final BLEU).")
    parser.add_argument("--requests", type=int, default=64, help="Timed requests per setting.")
    parser.add_argument("--concurrency", type=int, default=8, help="Client threads sending at once.")
    parser.add_argument("--max-batch", type=int, default=8, help="Batch limit of the batching-on setting.")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="Batching window of the batching-on setting.")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Per-request budget (default: the run's).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the server (default: torch's).")
    args = parser.parse_args()

    work = prompts_of(args.run_dir, args.requests)
    common = (["--method", args.method] if args.method else []) + (["--threads", str(args.threads)] if args.threads else [])
    settings = {"batching on": ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)],
                "batching off": ["--max-batch", "1"]}
    rows = {name: measure(args.run_dir, common + extra, work, args.concurrency, args.max_new_tokens) for name, extra in settings.items()}

    print(next(iter(rows.values()))["server"])
    print(f"{args.requests} requests, concurrency {args.concurrency}, over loopback")
    print(f"{'setting':<14}{'max_batch':>10}{'req/s':>9}{'p50 ms':>10}{'p95 ms':>10}{'batches':>9}{'mean batch':>12}")
    for name, r in rows.items():
        print(f"{name:<14}{r['max_batch']:>10}{r['requests_per_s']:>9.2f}{r['p50_ms']:>10.1f}{r['p95_ms']:>10.1f}{r['batches']:>9}{r['mean_batch']:>12.2f}")
    print(json.dumps({"run_dir": str(args.run_dir), "results": rows}))


if __name__ == "__main__":
    main()
