"""Weights & Biases logging: a training run's rank 0, and a search's summary run (tune/driver.py).

Mode: ``wandb.mode`` in the config if set; else ``WANDB_MODE`` if set; else online when W&B can find a
key (``WANDB_API_KEY`` or the netrc entry ``wandb login`` writes); else offline (no account, no network).
CI and tests set ``WANDB_MODE=offline``.

Credentials on a cluster: Train workers do not inherit the driver's environment (they are started by
each node's raylet). ``worker_runtime_env()`` is the driver's W&B settings (its key included, read from
the environment or netrc) for ``RunConfig(worker_runtime_env=...)``, so rank 0 logs where the driver would.

Files: every W&B directory (run files, cache, config, staged artifacts) lives under one ``directory``
that outlives the worker process (inside a Ray worker the default locations are per-process and get
lost: RAY-HERE.md). An offline run is copied, when it finishes, to ``sync_to`` (by default the Ray Train
run's storage, ``<storage_path>/<run>/wandb`` on s3://, gs://, ...), so ``wandb sync`` works after the
node that wrote it is gone.
"""
from __future__ import annotations

import netrc
import os
import re
from pathlib import Path
from urllib.parse import urlparse

# Settings a worker needs to log as the driver would (never printed, never written to configs).
CREDENTIAL_VARS = ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_MODE")
DEFAULT_HOST = "https://api.wandb.ai"


def netrc_key(base_url: str | None = None) -> str | None:
    """The API key ``wandb login`` stored in netrc ($NETRC or ~/.netrc) for the W&B host, if any."""
    host = urlparse(base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname or ""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry and entry[2] else None


def api_key() -> str | None:
    return os.environ.get("WANDB_API_KEY") or netrc_key()


def resolve_mode(mode: str = "") -> str:
    """The config's mode, else WANDB_MODE, else online with a key W&B can find, else offline."""
    if mode:
        return mode
    env = os.environ.get("WANDB_MODE", "").strip()
    if env:
        return "offline" if env == "dryrun" else env
    return "online" if api_key() else "offline"


def credentials() -> dict[str, str]:
    """The driver's W&B settings for the workers' environment (the key from env or netrc)."""
    env = {k: os.environ[k] for k in CREDENTIAL_VARS if os.environ.get(k)}
    key = api_key()
    if key:
        env["WANDB_API_KEY"] = key
    return env


def worker_runtime_env() -> dict:
    """``RunConfig(worker_runtime_env=...)``: Train workers get the driver's W&B credentials."""
    env = credentials()
    return {"env_vars": env} if env else {}


def run_id(name: str) -> str:
    """A W&B run id from a run name (W&B ids: letters, digits, - and _, at most 64 chars)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[-64:]


def artifact_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def train_storage_wandb() -> str:
    """Inside a Ray Train worker whose storage is remote: ``<storage>/<run>/wandb`` as a URI; else ''."""
    try:
        import ray.train

        storage = ray.train.get_context().get_storage()  # DeveloperAPI (Train V2)
        fs, path = storage.storage_filesystem, storage.experiment_fs_path
    except Exception:  # not in a Train worker, or the API moved: the directory itself is kept
        return ""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        return ""
    scheme = fs.type_name if fs.type_name in ("s3", "gcs") else ""
    if not scheme:
        return ""
    return f"{'gs' if scheme == 'gcs' else scheme}://{path.rstrip('/')}/wandb"


class RunLogger:
    """One W&B run; every method is a no-op when disabled (other ranks, ``wandb.enabled: false``)."""

    def __init__(self, *, enabled: bool, project: str = "nbmf", group: str = "", name: str = "",
                 mode: str = "", directory: str = "", config: dict | None = None, job_type: str = "train",
                 sync_to: str | None = None):
        self.run = None
        self.sync_to = ""
        self.synced: str | None = None
        if not enabled:
            return
        d = Path(directory or "runs/wandb").resolve()
        d.mkdir(parents=True, exist_ok=True)
        for var, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", ".cache"), ("WANDB_CONFIG_DIR", ".config"),
                         ("WANDB_DATA_DIR", ".data"), ("WANDB_ARTIFACT_DIR", ".artifacts")):
            os.environ[var] = str(d / sub) if sub else str(d)
        import wandb

        self.mode = resolve_mode(mode)
        self.sync_to = train_storage_wandb() if sync_to is None else sync_to
        # System metrics (CPU/GPU/memory), console capture and git state stay on: a team reading the run
        # needs them. W&B copes with no git repository (a job's uploaded working dir has none).
        self.run = wandb.init(
            project=project, group=group or None, name=name or None,
            id=run_id(name) if name else None, resume="allow", job_type=job_type, dir=str(d),
            mode=self.mode, config=config or {}, settings=wandb.Settings(silent=True),
        )

    @property
    def directory(self) -> str | None:
        return self.run.dir if self.run is not None else None

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def table(self, key: str, rows: list[dict], columns: list[str] | tuple[str, ...] | None = None) -> None:
        """``rows`` (dicts) as a W&B Table under ``key``; ``columns`` picks and orders the fields."""
        if self.run is None:
            return
        import wandb

        cols = list(columns) if columns else sorted({k for r in rows for k in r})
        self.run.log({key: wandb.Table(columns=cols, data=[[_cell(r.get(c)) for c in cols] for r in rows])})

    def by_type(self, key: str, by_type: dict[str, dict], metrics: tuple[str, ...] = (
            "n", "ratio", "ratio_mean", "ratio_p5", "ratio_min", "exact_rate", "decode_ms_p95")) -> None:
        """Per-record-type bench results (``nbmf bench``'s ``by_type``) as a table, one row per type."""
        self.table(key, [{"type": t, **{m: v.get(m) for m in metrics}} for t, v in sorted(by_type.items())],
                   ["type", *metrics])

    def image(self, key: str, path: str | Path, caption: str = "") -> None:
        """A plot (PNG) as a W&B Image; missing files are skipped (a plot step that drew nothing)."""
        if self.run is None or not Path(path).is_file():
            return
        import wandb

        self.run.log({key: wandb.Image(str(path), caption=caption or None)})

    def references(self, ratios: dict[str, float], ours: float | None = None) -> None:
        """Baseline codecs' ratios on the same records (zstd-dict, brotli) and ours against each."""
        values = {f"reference/{k}_ratio": v for k, v in ratios.items()}
        if ours is not None:
            values.update({f"reference/vs_{k}": ours / v for k, v in ratios.items() if v})
        self.summary(values)

    def log_artifact(self, path: str | Path, name: str, metadata: dict | None = None,
                     aliases: list[str] | None = None):
        """A codec artifact directory as a W&B model artifact (``aliases`` e.g. ["v3", "candidate"])."""
        if self.run is None:
            return None
        import wandb

        art = wandb.Artifact(artifact_name(name), type="model", metadata=metadata or {})
        art.add_dir(str(path))
        return self.run.log_artifact(art, aliases=list(aliases or []) or None)

    def register(self, path: str | Path, name: str, version: str, *, aliases: list[str],
                 target: str = "wandb-registry-model/nbmf-codec", metadata: dict | None = None) -> dict:
        """A registered version: its artifact with ``[version, *aliases]``, linked into the W&B registry
        collection ``target`` when online (W&B cannot link offline: ``wandb sync`` uploads the aliased
        artifact, and the summary says the link is pending)."""
        if self.run is None:
            return {}
        art = self.log_artifact(path, name, metadata={**(metadata or {}), "version": version},
                                aliases=[version, *aliases])
        link = {"artifact": artifact_name(name), "aliases": [version, *aliases], "target": target}
        if self.mode == "online":
            try:
                art.wait()
                self.run.link_artifact(art, target, aliases=[version, *aliases])
                link["linked"] = True
            except Exception as e:  # no registry access on this account: the artifact itself is logged
                link.update(linked=False, link_error=f"{type(e).__name__}: {e}"[:300])
        else:
            link.update(linked=False, link_error=f"{self.mode} run: link after `wandb sync`")
        self.summary({f"registered/{k}": v for k, v in link.items()})
        return link

    def finish(self, exit_code: int | None = None) -> None:
        if self.run is None:
            return
        offline = self.mode == "offline"
        run_dir = Path(self.run.dir).parent  # <dir>/wandb/offline-run-<time>-<id>/files -> the run's dir
        self.run.finish(exit_code=exit_code)
        self.run = None
        if offline and self.sync_to:
            from train import storage

            dest = storage.join(self.sync_to, run_dir.name)
            storage.copy_dir(str(run_dir), dest)
            self.synced = dest


def finish_stopped(*, name: str, directory: str, project: str = "nbmf", group: str = "", mode: str = "",
                   summary: dict | None = None, sync_to: str = "") -> None:
    """Finish the W&B run of a trial that Tune stopped (ASHA kills its workers before rank 0 can): the run is
    resumed by id, told why it stopped, and finished with exit code 0."""
    logger = RunLogger(enabled=True, project=project, group=group, name=name, mode=mode, directory=directory,
                       sync_to=sync_to)
    logger.summary({"status": "stopped", **(summary or {})})
    logger.finish(exit_code=0)


def _cell(v):
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (list, dict)):
        return str(v)
    return v
