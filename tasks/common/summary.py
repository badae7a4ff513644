"""Run summaries: ``summary.json`` (read by reports) and ``summary.md`` (read by people).

Schema, common to every task::

    {"task", "name", "group", "arch", "attention", "dataset", "seed", "config": {...},
     "git_commit", "git_dirty", "hardware": {...}, "params", "macs", "final": {metric: value},
     "best": {metric: value}, "best_step", "steps", "wall_time_s", "history_file": "metrics.jsonl",
     "primary_metric", "primary_mode", "status"}
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from tasks.utils.files import write_json_atomic, write_text_atomic
from tasks.utils.formatting import count
from tasks.utils.processes import world_size

SUMMARY_FILE = "summary.json"
_REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    """The output of a git command in the repository holding this code; None if it fails."""
    try:
        done = subprocess.run(["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info() -> dict[str, Any]:
    """Where and with what a run ran: git, host, CPU, GPUs, library versions, processes."""
    import torch
    from accelerate import PartialState

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    info: dict[str, Any] = {
        "git_commit": commit, "git_dirty": None if status is None else bool(status), "hostname": socket.gethostname(),
        "platform": platform.platform(), "python": platform.python_version(), "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(), "gpu_count": len(gpus), "gpus": gpus, "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if gpus and torch.backends.cudnn.is_available() else None,
    }
    for package in ("torchvision", "accelerate", "wandb"):
        # From the installed metadata: importing wandb just to ask takes seconds. A run with
        # --wandb disabled needs no wandb (a GPU box may lack it): then None.
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    info["num_processes"] = PartialState().num_processes if PartialState._shared_state else world_size()
    return info


def build_summary(*, task: str, name: str, config: Mapping[str, Any], progress: Mapping[str, Any], params: int,
                  status: str, environment: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict:
    """The run summary (schema in the module docstring) from the run's ``config`` and the trainer's
    ``progress`` (step, final, best, best_metric, best_mode, best_step, last_eval_step,
    wall_time_s). Without a best metric, "best" is the final evaluation. ``extra`` adds or
    overrides fields."""
    primary_metric = progress.get("best_metric")
    if primary_metric:
        best, best_step = progress.get("best") or {}, progress.get("best_step")
    else:
        best, best_step = progress.get("final") or {}, progress.get("last_eval_step")
    summary = {
        "task": task, "name": name, "group": config.get("group"), "arch": config.get("arch"),
        "attention": config.get("attention"), "dataset": config.get("dataset"), "seed": config.get("seed"),
        "config": dict(config), "git_commit": environment.get("git_commit"), "git_dirty": environment.get("git_dirty"),
        "hardware": dict(environment), "params": params, "macs": config.get("macs"),
        "final": progress.get("final") or {}, "best": best, "best_step": best_step, "steps": progress.get("step"),
        "wall_time_s": round(float(progress.get("wall_time_s") or 0.0), 3), "history_file": "metrics.jsonl",
        "primary_metric": primary_metric, "primary_mode": progress.get("best_mode"), "status": status,
    }
    summary.update(extra or {})
    return summary


# -- Markdown -------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d} ({seconds} s)"


def _count(value: int | None) -> str:
    """``1.547M (1,546,883)``: the rounded count as in comparisons, then the exact one."""
    short = count(value)
    return short if value is None or abs(value) < 1e6 else f"{short} ({value:,})"


def render_markdown(summary: Mapping[str, Any]) -> str:
    """A readable page: run facts, final/best metrics side by side, key config, hardware."""
    name = summary.get("name") or "run"
    lines = [f"# {summary.get('task') or 'run'}: {name}", ""]
    commit = summary.get("git_commit")
    facts = [
        *((key, summary.get(key)) for key in ("status", "group", "arch", "attention", "dataset", "seed")),
        ("params", _count(summary.get("params"))),
        ("MACs", _count(summary.get("macs"))),
        ("steps", summary.get("steps")),
        ("best step", summary.get("best_step")),
        ("wall time", _duration(summary.get("wall_time_s"))),
        ("git commit", None if commit is None else commit[:12] + (" (dirty)" if summary.get("git_dirty") else "")),
    ]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in facts if value is not None]

    final, best = summary.get("final") or {}, summary.get("best") or {}
    scalar = lambda value: value is None or isinstance(value, (int, float))  # noqa: E731
    # Per-class lists and the like stay in summary.json; the page shows the scalar metrics.
    metrics = [m for m in dict.fromkeys([*final, *best]) if scalar(final.get(m)) and scalar(best.get(m))]
    if metrics:
        primary = summary.get("primary_metric")
        mode = summary.get("primary_mode")
        lines += ["", "## Metrics", "",
                  f"Best = the evaluation with the {'highest' if mode != 'min' else 'lowest'} "
                  f"`{primary}` (step {summary.get('best_step')})." if primary else "Best = final (no primary metric).",
                  "", "| metric | final | best |", "|---|---:|---:|"]
        for metric in metrics:
            label = f"**{metric}**" if metric == primary else metric
            lines.append(f"| {label} | {_fmt(final.get(metric))} | {_fmt(best.get(metric))} |")

    config = summary.get("config") or {}
    if config:
        lines += ["", "## Config", "", "| key | value |", "|---|---|"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in config.items() if not isinstance(value, Mapping)]
    hardware = summary.get("hardware") or {}
    if hardware:
        gpus = hardware.get("gpus") or []
        lines += ["", "## Hardware", "",
                  f"{hardware.get('num_processes', 1)} process(es) on {hardware.get('hostname')}: "
                  f"{hardware.get('cpu')} ({hardware.get('cpu_count')} CPUs)"
                  + (f", GPUs: {', '.join(gpus)}" if gpus else ", no GPU")
                  + f"; torch {hardware.get('torch')}, CUDA {hardware.get('cuda')}, "
                  f"accelerate {hardware.get('accelerate')}."]
    return "\n".join(lines) + "\n"


def write_summary(run_dir: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """Write ``summary.json`` and ``summary.md`` into ``run_dir`` (atomically)."""
    run_dir = Path(run_dir)
    write_json_atomic(run_dir / SUMMARY_FILE, dict(summary))
    write_text_atomic(run_dir / "summary.md", render_markdown(summary))


def load_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``run_dir/summary.json`` (``run_dir`` may also be the file itself)."""
    path = Path(run_dir)
    if path.is_dir() or path.suffix != ".json":
        path = path / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no run summary at {path} (did the run finish?)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"run summary is not valid JSON: {path} ({error})") from None
