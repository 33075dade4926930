"""Load test of `lavt serve`: concurrent clients against a local server, throughput, latency,
refusals and the server's memory.

Starts ``lavt serve --model M`` on a free loopback port (the only address it touches), waits for
``/health``, sends warm-up requests, records the server's RSS at rest (the *idle-after-warm-up*
RSS), then for each client count runs that many client threads for a fixed time. Each client loops:
a random image of the bundled example scenes, resized to ``--image`` (default 640x480, a typical
photo), with 1-3 random expressions of that scene, ``POST /predict``; on HTTP 503 ("busy, retry")
it waits ``--backoff`` seconds and goes on, as a polite client would. A sampler thread reads the
server's RSS (``/proc/PID/status``, VmRSS) every 0.1 s.

Per client count: requests sent, answered 200, refused 503, failed otherwise (any other status,
connection error or client timeout: none is expected), throughput (answers per second), p50 / p95
latency of the answered requests, and the server's peak RSS against its idle RSS.

    python benchmarks/bench_serve.py --model DIR [--clients 1 4 20] [--seconds 30 30 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ is not a package
import harness  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "lavt" / "serve" / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def payloads(size: tuple[int, int]) -> list[tuple[bytes, list[str]]]:
    """(JPEG bytes, the scene's expressions) for each bundled example, resized to ``size``."""
    from PIL import Image

    meta = json.loads((EXAMPLES / "examples.json").read_text())
    out = []
    for example in meta["examples"]:
        buf = io.BytesIO()
        Image.open(EXAMPLES / example["file"]).convert("RGB").resize(size, Image.BILINEAR).save(buf, "JPEG", quality=90)
        out.append((buf.getvalue(), example["expressions"] + ["the big shape", "the object on the left"]))
    return out


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.1)


def client(url: str, data: list, until: float, backoff: float, seed: int, records: list) -> None:
    import httpx

    rng = random.Random(seed)
    with httpx.Client(timeout=300) as http:
        while time.time() < until:
            image, texts = rng.choice(data)
            chosen = rng.sample(texts, rng.randint(1, 3))
            start = time.perf_counter()
            try:
                r = http.post(url + "/predict", files={"image": ("photo.jpg", image, "image/jpeg")},
                              data={"expressions": "\n".join(chosen)})
                status = r.status_code
            except httpx.HTTPError as e:
                status = f"error: {type(e).__name__}"
            records.append((status, time.perf_counter() - start))
            if status == 503:
                time.sleep(backoff)


def run_level(url: str, pid: int, data: list, clients: int, seconds: float, backoff: float) -> dict:
    records: list = []
    sampler = Sampler(pid)
    sampler.start()
    until = time.time() + seconds
    threads = [threading.Thread(target=client, args=(url, data, until, backoff, k, records)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    ok = sorted(lat for status, lat in records if status == 200)
    refused = sum(1 for status, _ in records if status == 503)
    failed = [status for status, _ in records if status not in (200, 503)]
    q = statistics.quantiles(ok, n=20) if len(ok) >= 2 else [float("nan")] * 19
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(records), "ok": len(ok),
            "refused_503": refused, "failed": len(failed), "failures": sorted(set(map(str, failed)))[:5],
            "throughput_per_s": len(ok) / wall, "p50_s": statistics.median(ok) if ok else float("nan"),
            "p95_s": q[18], "peak_rss_mib": sampler.peak}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="what `lavt serve --model` takes")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 20])
    p.add_argument("--seconds", type=float, nargs="+", default=[30, 30, 120], help="one per client count")
    p.add_argument("--image", default="640x480", help="WxH the example scenes are resized to")
    p.add_argument("--queue-size", type=int, default=4, help="lavt serve --queue-size")
    p.add_argument("--backoff", type=float, default=1.0, help="seconds a client waits after a 503")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if len(args.seconds) != len(args.clients):
        p.error("give one --seconds value per --clients value")
    width, height = (int(v) for v in args.image.lower().split("x"))
    harness.stay_offline()
    print(harness.machine_line())
    data = payloads((width, height))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "serve.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "lavt", "serve", "--model", args.model, "--port", str(port),
           "--queue-size", str(args.queue_size)]
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    print(log.read_text()[-2000:], file=sys.stderr)
                    return 1
                time.sleep(0.2)
        model = json.loads(urllib.request.urlopen(url + "/model").read())
        print(f"server: {' '.join(cmd[2:])}; {model['architecture']}, {model['parameters_m']} M parameters, "
              f"input {model['input_size']} px, {model['device']} {model['precision']}")
        print(f"clients send {width}x{height} JPEGs with 1-3 expressions; 503 -> wait {args.backoff:g} s and go on")
        warm = run_level(url, server.pid, data, 1, 5, args.backoff)
        time.sleep(1)
        idle = rss_mib(server.pid)
        print(f"warm-up: {warm['ok']} requests; server RSS at rest after warm-up: {idle:.0f} MiB")
        rows, results = [], []
        for clients, seconds in zip(args.clients, args.seconds):
            r = run_level(url, server.pid, data, clients, seconds, args.backoff)
            r["peak_over_idle"] = r["peak_rss_mib"] / idle
            results.append(r)
            harness.log(f"  {clients} clients: {r['ok']} ok, {r['refused_503']} refused, {r['failed']} failed")
            rows.append([clients, f"{r['seconds']:.0f}", r["requests"], r["ok"], r["refused_503"], r["failed"],
                         f"{r['throughput_per_s']:.2f}", f"{r['p50_s']:.2f}", f"{r['p95_s']:.2f}",
                         f"{r['peak_rss_mib']:.0f}", f"{r['peak_over_idle']:.2f}x"])
        health = json.loads(urllib.request.urlopen(url + "/health").read())
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    print()
    harness.print_table(["clients", "s", "requests", "200", "503", "failed", "answers/s", "p50 s", "p95 s",
                         "peak RSS MiB", "peak / idle"], "r" * 11, rows)
    print(f"\nserver counters at the end: {health['queue']}")
    if args.json:
        harness.write_json(args.json, {"machine": harness.machine_meta(), "model": model, "idle_rss_mib": idle,
                                       "image": [width, height], "levels": results, "server": health})
    return 0 if all(r["failed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
