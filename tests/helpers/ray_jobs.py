"""Test support for the Ray jobs (tests/train, tests/tune): one private local Ray head node, and a reader for offline W&B runs.

``LocalHead`` runs ``ray start --head --block`` as a child process on free ports, so a test session
gets a real cluster (dashboard and job server included, which ``ray job submit`` and Train-inside-
Tune need) and stops exactly that cluster by signalling its own child: never ``ray stop``, which
would kill every Ray instance on a shared machine.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from train.driver import free_port


def ray_env() -> dict:
    """Environment for Ray child processes: this venv first on PATH, no auth token, no telemetry."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", WANDB_MODE="offline")
    env.pop("RAY_ADDRESS", None)
    return env


class LocalHead:
    """A private single-node Ray cluster: ``start()``, ``gcs_address``, ``dashboard_url``, ``stop()``."""

    def __init__(self, num_cpus: int = 2, log_path: str | Path | None = None):
        self.num_cpus = num_cpus
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self.port = self.dashboard_port = 0

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout: float = 120.0) -> "LocalHead":
        self.port, self.dashboard_port = free_port(), free_port()
        ports = {"--ray-client-server-port": free_port(), "--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(), "--runtime-env-agent-port": free_port(),
                 "--metrics-export-port": free_port()}
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
               f"--port={self.port}", f"--num-cpus={self.num_cpus}", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", "--disable-usage-stats",
               *(f"{k}={v}" for k, v in ports.items())]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        # RAY_ADDRESS in the cluster's own environment: Ray's state API inside it (Train's placement-group
        # cleaner) must find this cluster, not fail on "multiple active Ray instances" on a shared machine.
        env = {**ray_env(), "RAY_ADDRESS": self.gcs_address}
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`ray start --head` exited with {self.proc.returncode} (log: {self.log_path})")
            if self._job_server_up():
                return self
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"the Ray head node did not come up within {timeout:.0f}s (log: {self.log_path})")

    def _job_server_up(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(self.dashboard_url + "/api/version", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM our `ray start --block` process: it shuts down the processes it started."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own process group (start_new_session)
            self.proc.wait(10)


def _leveldb_records(data: bytes, offset: int = 7, block: int = 32768):
    """Records of a LevelDB-log-format file (W&B's .wandb transaction log; 7-byte W&B header first)."""
    pending = b""
    pos = offset
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            pos += block - pos % block if pos % block else 0
            continue
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk
            pending = b""


def read_wandb_run(run_dir: str | Path) -> dict:
    """What an offline W&B run logged: ``{"runs": [...], "config": {...}, "history": [...], "summary": {...},
    "artifacts": [...], "exit_codes": [...], "stats": n}`` (``stats``: system-metric samples).

    ``run_dir`` is a ``wandb/offline-run-*`` directory, or any directory above one (all runs merged).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    # realpath: W&B's wandb/latest-run is a link to the newest run directory, not another run
    files = sorted({os.path.realpath(f) for f in glob.glob(str(Path(run_dir) / "**" / "*.wandb"), recursive=True)})
    out: dict = {"runs": [], "config": {}, "history": [], "summary": {}, "artifacts": [], "exit_codes": [],
                 "stats": 0, "files": files}
    for f in files:
        data = Path(f).read_bytes()
        if data[:4] != b":W&B":
            raise ValueError(f"{f} is not a W&B transaction log")
        for raw in _leveldb_records(data):
            rec = pb.Record()
            rec.ParseFromString(raw)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out["runs"].append({"id": rec.run.run_id, "group": rec.run.run_group, "name": rec.run.display_name,
                                    "project": rec.run.project})
                for item in rec.run.config.update:
                    out["config"][item.key] = json.loads(item.value_json)
            elif kind == "config":
                for item in rec.config.update:
                    out["config"][item.key] = json.loads(item.value_json)
            elif kind == "history":
                out["history"].append({(it.key or "/".join(it.nested_key)): json.loads(it.value_json)
                                       for it in rec.history.item})
            elif kind == "summary":
                for it in rec.summary.update:
                    out["summary"][it.key or "/".join(it.nested_key)] = json.loads(it.value_json)
            elif kind == "artifact":
                out["artifacts"].append({"name": rec.artifact.name, "type": rec.artifact.type,
                                         "aliases": list(rec.artifact.aliases)})
            elif kind == "exit":
                out["exit_codes"].append(rec.exit.exit_code)
            elif kind == "stats":
                out["stats"] += 1
    return out


_SESSION: dict = {}


def session_head(log_path: str | Path | None = None, num_cpus: int = 2) -> tuple[LocalHead, bool]:
    """One head node per process (test session), shared by every conftest that asks: (head, started_now)."""
    if "head" in _SESSION:
        return _SESSION["head"], False
    head = LocalHead(num_cpus=num_cpus, log_path=log_path).start()
    _SESSION["head"] = head
    return head, True


def run_module(module: str, args: list[str], *, head: LocalHead, cwd: str | Path, timeout: float = 500):
    """``python -m module --address <head> args...`` in a fresh process (no Ray state shared with the test
    process, whatever other suites did to it); returns the CompletedProcess."""
    cmd = [sys.executable, "-m", module, "--address", head.gcs_address, *args]
    return subprocess.run(cmd, cwd=cwd, env=ray_env(), capture_output=True, text=True, timeout=timeout)
