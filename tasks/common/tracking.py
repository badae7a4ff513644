"""Experiment tracking: always a local ``metrics.jsonl``, and W&B when it works.

W&B never prompts and never stops a run. ``auto`` goes online only with an API key *and* an API
that answers an HTTP request within 3 s; an online start that still fails (after
``BAM_WANDB_TIMEOUT`` seconds, default 15) is torn down and recorded offline under the same run
id, so ``wandb sync`` later uploads the whole history. Any other W&B failure prints one warning.
Without a usable cache folder (``HOME`` unset) W&B keeps its logs in ``run_dir/wandb/cache``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import netrc
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlparse

from tasks.utils.files import write_text_atomic
from tasks.utils.messages import note, warn
from tasks.utils.processes import is_main_process

WANDB_MODES = ("auto", "online", "offline", "disabled")
METRICS_FILE = "metrics.jsonl"
TIMEOUT_VARIABLE = "BAM_WANDB_TIMEOUT"
DEFAULT_TIMEOUT_S = 15.0  # an online start; with the probe, the tear-down and the offline start, ~25 s at most
PROBE_TIMEOUT_S = 3.0
OFFLINE_INIT_TIMEOUT_S = 60.0  # W&B's local service only: no network involved


def online_timeout() -> float:
    """Seconds an online W&B start may take (``BAM_WANDB_TIMEOUT``, default 15)."""
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_VARIABLE}={text!r} must be a positive number of seconds")
    return value


def _api_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def wandb_api_key_configured() -> bool:
    """True when W&B has a key: ``WANDB_API_KEY`` or a ``~/.netrc`` entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urlparse(_api_url()).hostname or "api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _api_reachable(timeout: float) -> bool:
    """True when the W&B API answers an HTTP request within ``timeout`` seconds, whatever its
    status (401 is an answer); a connection that opens and then stays silent is not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(_api_url(), method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):  # ValueError: a bad URL
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """Turn ``auto|online|offline|disabled`` into the mode W&B will really run in.

    ``auto`` honours an explicit ``WANDB_MODE``/``WANDB_DISABLED`` environment setting, then goes
    online only with a key and an API that answers (saying so when it does not). ``online``
    without a key falls back to offline (W&B would otherwise prompt for a login).
    """
    if mode == "auto":
        if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
            return "disabled"
        env_mode = os.environ.get("WANDB_MODE", "").lower()
        if env_mode in ("online", "offline", "disabled", "dryrun"):
            mode = "offline" if env_mode == "dryrun" else env_mode
        elif not wandb_api_key_configured():
            return "offline"
        else:
            timeout = min(PROBE_TIMEOUT_S, online_timeout())
            if _api_reachable(timeout):
                return "online"
            note(f"W&B at {_api_url()} did not answer within {timeout:g} s; recording offline instead "
                 "(upload later with `wandb sync`)")
            return "offline"
    if mode == "online" and not wandb_api_key_configured():
        warn("--wandb online: no W&B API key configured (WANDB_API_KEY or `wandb login`); "
             "recording offline instead")
        return "offline"
    return mode


def default_tags(config: Mapping[str, Any], task: str = "", extra: Iterable[str] = ()) -> list[str]:
    """Tags that let W&B group runs without manual work: task, arch, bam/baseline, dataset."""
    kind = config.get("attention")  # se, cbam: named, so that comparisons stay unambiguous
    if str(kind) in ("none", "", "baseline"):
        kind = "baseline"
    elif str(kind).startswith("bam"):
        kind = "bam"
    tags: list[str] = []
    for tag in (task, config.get("arch"), kind, config.get("dataset"), *extra):
        if tag and str(tag) not in tags:
            tags.append(str(tag)[:64])  # W&B rejects tags longer than 64 characters
    return tags


def flatten(metrics: Mapping[str, Any], separator: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level: ``{"a": {"b": 1}}`` -> ``{"a/b": 1}``; tensors as lists."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, separator, name + separator))
        else:
            flat[name] = value.tolist() if hasattr(value, "tolist") else value  # tensors, numpy
    return flat


def _wandb_cache_usable() -> bool:
    """Whether W&B's cache folder, where its service writes its logs, exists or can be made."""
    if os.environ.get("WANDB_CACHE_DIR"):
        return True  # the user's choice
    base = os.environ.get("XDG_CACHE_HOME") or (os.environ.get("HOME") and os.path.join(os.environ["HOME"], ".cache"))
    if not base:
        return False
    folder = Path(base, "wandb")
    try:
        folder.mkdir(parents=True, exist_ok=True)  # as W&B would
    except OSError:
        return False
    return os.access(folder, os.W_OK)


class Tracker:
    """Logs metrics to ``run_dir/metrics.jsonl`` and, when enabled, to W&B.

    W&B starts at the first ``log``, or with :meth:`start`: the trainer passes the run id stored in
    a checkpoint so that a resumed run continues its W&B run.
    """

    def __init__(self, run_dir: str | os.PathLike, config: Mapping[str, Any], project: str = "bam",
                 group: str | None = None, tags: Iterable[str] = (), mode: str = "auto", task: str = "",
                 name: str | None = None, job_type: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.config = dict(config)
        self.project, self.group, self.name = project, group, name or self.run_dir.name
        self.job_type = job_type or task or None  # a training run's job is its task
        self.tags = default_tags(self.config, task, tags)
        self.is_main = is_main_process()
        self.mode = resolve_wandb_mode(mode) if self.is_main else "disabled"
        self.run_id: str | None = None
        self._run = None
        self._started = self._warned = False

    def start(self, run_id: str | None = None) -> None:
        """Open the W&B run (``run_id`` resumes that run). Safe to call twice; no-op off main."""
        if self._started:
            return
        self._started = True
        self.run_id = run_id or self.run_id or uuid.uuid4().hex[:8]
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.mode == "disabled":
            return
        try:
            str(self.run_dir.resolve()).encode("utf-8")
        except UnicodeEncodeError:
            return self._warn(f"W&B cannot record in {self.run_dir}: its path is not valid UTF-8, and W&B takes "
                              "UTF-8 paths only (rename the folder to have the run in W&B too)")
        os.environ.setdefault("WANDB_SILENT", "true")
        if not _wandb_cache_usable():
            os.environ["WANDB_CACHE_DIR"] = str(self.run_dir / "wandb" / "cache")
        import wandb  # a dependency, imported late: it takes seconds

        # A failed online start (a wrong key, the network gone since the probe) records offline,
        # under the same id (a resumed run stays one W&B run), else under a fresh one.
        attempts = [(self.mode, self.run_id)]
        if self.mode == "online":
            attempts += [("offline", self.run_id), ("offline", uuid.uuid4().hex[:8])]
        for number, (mode, run_id) in enumerate(attempts, start=1):
            try:
                timeout = online_timeout() if mode == "online" else OFFLINE_INIT_TIMEOUT_S
                self._run = wandb.init(
                    project=self.project, group=self.group, job_type=self.job_type, tags=self.tags,
                    config=self.config, name=self.name, dir=str(self.run_dir), id=run_id, resume="allow", mode=mode,
                    settings=wandb.Settings(silent=True, init_timeout=timeout, x_disable_viewer=True))
                self.mode, self.run_id = mode, run_id
                return
            except Exception as error:  # W&B must never stop training
                reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
                if number == len(attempts):
                    return self._warn(f"W&B could not start ({reason})")
                if mode == "online":
                    warn(f"W&B could not start online ({reason}); recording offline instead")
                    # W&B's service keeps the failed run's id reserved ("run ID ... is in use") until torn down.
                    with contextlib.suppress(Exception):
                        wandb.teardown()

    def _warn(self, message: str) -> None:
        """Say once that W&B is given up, and go on with local files."""
        if not self._warned:
            self._warned = True
            warn(f"{message}; continuing with local files in {self.run_dir}")
        self._run = None

    def _wandb_call(self, what: str, call) -> None:
        """``call(run)`` on the W&B run, if any; a failure gives W&B up with one warning."""
        if self._run is None:
            return
        try:
            call(self._run)
        except Exception as error:
            self._warn(f"W&B {what} failed ({type(error).__name__}: {error})")

    def log(self, metrics: Mapping[str, Any], step: int, split: str = "train") -> None:
        """Append ``{"step", "split", **metrics}`` to metrics.jsonl and log ``split/name`` to W&B."""
        if not self.is_main:
            return
        self.start()
        flat = flatten(metrics)
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps({"step": int(step), "split": split, **flat}, default=str) + "\n")
        self._wandb_call("log", lambda run: run.log({f"{split}/{k}": v for k, v in flat.items()}, step=int(step)))

    def log_images(self, images: Mapping[str, Any], step: int, caption: str | None = None) -> None:
        """Log PIL images, HxWx3 arrays or image paths to W&B (callers save their own PNGs)."""
        self._log_media("image", lambda wandb: {
            key: wandb.Image(str(image) if isinstance(image, os.PathLike) else image,
                             caption=caption) for key, image in images.items()}, step)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        """Log a table to W&B (callers write their own CSV or Markdown copy)."""
        self._log_media("table", lambda wandb: {key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])},
                        step)

    def _log_media(self, kind: str, convert, step: int) -> None:
        """Log the W&B objects ``convert(wandb)`` makes; a failed conversion, like a failed call,
        gives W&B up with one warning."""
        def log(run) -> None:
            import wandb

            run.log(convert(wandb), step=int(step))

        if self.is_main:
            self.start()
            self._wandb_call(f"log_{kind}s", log)

    def save_file(self, path: str | os.PathLike) -> None:
        """Keep a file of the run folder with the W&B run (uploaded with it, or by ``wandb sync``)."""
        self._wandb_call("save", lambda run: run.save(str(path), base_path=str(self.run_dir), policy="now"))

    def update_summary(self, values: Mapping[str, Any]) -> None:
        """Put values in the W&B run summary (nested dicts flattened to ``a/b`` keys)."""
        self._wandb_call("summary", lambda run: run.summary.update(flatten(values)))

    def truncate_history(self, after_step: int) -> None:
        """Drop metrics.jsonl lines logged after ``after_step`` (a resumed run redoes those steps)."""
        if not self.is_main or not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= after_step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        write_text_atomic(self.metrics_path, "".join(line + "\n" for line in kept))

    def offline_dir(self) -> Path | None:
        """The ``wandb/offline-run-*`` folder of this run, when recording offline."""
        if self._run is None or self.mode != "offline":
            return None
        try:
            return Path(self._run.dir).parent
        except Exception:
            return None

    def finish(self, exit_code: int = 0) -> None:
        """Close the W&B run; for an offline run, print the ``wandb sync`` command."""
        if self._run is None:
            return
        offline = self.offline_dir()
        self._wandb_call("finish", lambda run: run.finish(exit_code=exit_code))
        self._run = None
        if offline is not None:
            print(f"W&B run recorded offline; upload it with: wandb sync {offline}", flush=True)
