"""Load benchmark of the codec service over HTTP on loopback: latency percentiles, throughput, autoscaling.

    python bench/serve_load.py --model-dir models --requests 2000 --clients 8
    python bench/serve_load.py --model-dir models --op decode --out runs/serve_load.json

Starts a local Ray + Serve (or uses --url for a running service), replays records from
../shared/corpus/val.jsonl (data/sample/val.jsonl when the corpus is absent) from ``--clients``
closed-loop clients (each sends its next request when the last one answered: a bounded load), and
reports p50/p95/p99 latency, throughput, status codes, fallbacks and the model deployment's replica
count over time (autoscaling). The memory service's budget is p95 < 120 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import threading
import time
from pathlib import Path

from nbmf.bench.metrics import percentile
from nbmf.data.corpus import read_corpus

REPO = Path(__file__).resolve().parents[1]


def load_payloads(path: Path | None, limit: int) -> list:
    candidates = [path] if path else [REPO.parent / "shared" / "corpus" / "val.jsonl", REPO / "data" / "sample" / "val.jsonl"]
    for p in candidates:
        if p and p.exists():
            return [r["data"] for r in read_corpus(p, limit=limit)]
    raise SystemExit(f"no records found at {', '.join(map(str, candidates))}")


class ReplicaWatcher(threading.Thread):
    """Samples the model deployment's running replica count once a second (autoscaling evidence)."""

    def __init__(self, app: str):
        super().__init__(daemon=True)
        self.app, self.samples, self.stop_event = app, [], threading.Event()

    def run(self):
        from ray import serve

        t0 = time.monotonic()
        while not self.stop_event.is_set():
            try:
                dep = serve.status().applications[self.app].deployments["CodecModel"]
                running = dep.replica_states.get("RUNNING", 0)
                self.samples.append((round(time.monotonic() - t0, 1), running))
            except Exception:  # noqa: BLE001 - status is best effort while scaling
                pass
            self.stop_event.wait(1.0)


def run_load(url: str, payloads: list, op: str, n: int, clients: int, blobs: list[bytes]) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    fallbacks: dict[str, int] = {}
    encoders: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(n))

    def worker():
        with httpx.Client(base_url=url, timeout=30) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                if op == "encode":
                    r = c.post("/v1/encode", json={"payload": payloads[i % len(payloads)], "record_id": f"bench-{i}",
                                                   "format": "raw"})
                else:
                    r = c.post("/v1/decode", content=blobs[i % len(blobs)],
                               headers={"content-type": "application/octet-stream"})
                dt = (time.perf_counter() - t0) * 1e3
                with lock:
                    latencies.append(dt)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if "x-nbmf-fallback" in r.headers:
                        fallbacks[r.headers["x-nbmf-fallback"]] = fallbacks.get(r.headers["x-nbmf-fallback"], 0) + 1
                    if "x-nbmf-encoder" in r.headers:
                        encoders[r.headers["x-nbmf-encoder"]] = encoders.get(r.headers["x-nbmf-encoder"], 0) + 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"op": op, "requests": n, "clients": clients, "wall_s": round(wall, 2),
            "throughput_rps": round(n / wall, 1),
            "latency_ms": {"p50": round(percentile(latencies, 50), 2), "p95": round(percentile(latencies, 95), 2),
                           "p99": round(percentile(latencies, 99), 2), "mean": round(statistics.fmean(latencies), 2),
                           "max": round(max(latencies), 2)},
            "status": statuses, "fallbacks": fallbacks, "encoders": encoders}


def measure(url: str, payloads: list, a) -> dict:
    import httpx

    report = {"url": url, "versions": httpx.get(f"{url}/v1/versions").json(), "runs": []}
    with httpx.Client(base_url=url, timeout=30) as c:  # blobs for the decode run, and a warm-up
        blobs = [c.post("/v1/encode", json={"payload": x, "record_id": f"warm-{i}", "format": "raw"}).content
                 for i, x in enumerate(payloads[:200])]
    for op in (["encode", "decode"] if a.op == "both" else [a.op]):
        res = run_load(url, payloads, op, a.requests, a.clients, blobs)
        print(json.dumps(res), flush=True)
        report["runs"].append(res)
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=None, help="model registry dir (default: NBMF_MODEL_DIR or <repo>/models)")
    p.add_argument("--records", type=Path, default=None, help="JSONL records (default: the shared corpus val split)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=8, help="closed-loop concurrent clients")
    p.add_argument("--op", choices=["encode", "decode", "both"], default="both")
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=3)
    p.add_argument("--target-ongoing", type=float, default=2.0, help="autoscaling target per model replica")
    p.add_argument("--model-cpus", type=float, default=0.5)
    p.add_argument("--url", default=None, help="benchmark a running service instead of starting one")
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    a = p.parse_args(argv)

    payloads = load_payloads(a.records, 5000)
    watcher = None
    if a.url is None:
        for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}.items():
            os.environ.setdefault(k, v)
        import ray
        from ray import serve

        from serve.app import build_app
        from serve.args import AppArgs

        ray.init(address="local", include_dashboard=False, log_to_driver=False)  # private: never a shared cluster
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = AppArgs(model_dir=a.model_dir, model_num_cpus=a.model_cpus,
                       autoscaling={"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                                    "target_ongoing_requests": a.target_ongoing, "upscale_delay_s": 2.0})
        t0 = time.monotonic()
        serve.run(build_app(args), name="nbmf", route_prefix="/")
        print(f"service up in {time.monotonic() - t0:.1f}s on port {port}", flush=True)
        url = f"http://127.0.0.1:{port}"
        watcher = ReplicaWatcher("nbmf")
        watcher.start()
    else:
        url = a.url

    try:
        report = measure(url, payloads, a)
    finally:
        if watcher is not None:
            watcher.stop_event.set()
            watcher.join()
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    if watcher is not None:
        counts = [n for _, n in watcher.samples]
        report["model_replicas"] = {"start": counts[0] if counts else None, "max": max(counts, default=None),
                                    "timeline": watcher.samples}
        print(f"model replicas: start {report['model_replicas']['start']}, max {report['model_replicas']['max']}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
