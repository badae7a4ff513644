"""Load finished runs from local run folders or the W&B API.

Both sources are turned into the same :class:`Run`, so the table and the plots never care where a
run came from. The fields follow the run summary every task writes (``summary.json``); its
history is the run's ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tasks.common.per_sample import PER_SAMPLE_FILE
from tasks.common.summary import load_summary
from tasks.common.tracking import flatten
from tasks.utils.messages import note

# The job type of the W&B run that holds a paired run's comparison: not a run to compare.
COMPARISON_JOB = "comparison"

BASELINE = "none"

# Config fields that do not make two runs incomparable: who the run is (seed, names, folders),
# how often it logged, and everything that belongs to the attention being compared (its name,
# placement and options, and the parameter and MAC counts it changes). Every other field, at any
# depth (``model.global_residual``, ``scale``, ``sets``, ``protocol``, ``recipe.lr``...), must be
# equal for a baseline and a variant to share a row; a field nobody listed here therefore keeps
# runs apart rather than mixing them.
_NOT_SETTINGS = frozenset({
    "seed", "name", "run_name", "group", "tags", "experiment", "data_root", "output_dir", "resume",
    "log_every", "eval_every",
    "attention", "placement", "attention_options", "attention_kwargs", "attention_interval", "attention_sites",
    "variant", "params", "macs", "macs_v1", "encoder_weights_missing", "encoder_weights_unexpected",
})
_NOT_SETTING_PREFIXES = ("params_", "macs_")
# Pretrained weights may differ in file (a BAM backbone has BAM's weights); whether there are any
# does matter.
_WEIGHT_FILES = ("encoder_weights", "backbone_weights")


@dataclass
class Run:
    name: str
    task: str
    dataset: str
    arch: str
    attention: str
    seed: int | None
    primary_metric: str
    final: dict[str, float]
    params: int | None = None
    macs: int | None = None
    group: str = ""
    wall_time_s: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # eval rows: {"step", metric: value}
    protocol: str = ""
    source: str = ""
    status: str = ""  # the trainer's "completed", "interrupted", "failed: ..."; "" when not recorded
    label: str = ""  # how a paper table prints this run's row, when it belongs to one
    paper: dict[str, float] = field(default_factory=dict)  # that row's figures in the paper
    setting: tuple[tuple[str, str], ...] = ()  # what else must match to compare (:func:`comparable_setting`)
    per_sample_file: str = ""  # the final evaluation's per-sample results, where the source has them
    reference: dict[str, Any] = field(default_factory=dict)  # {"name": "bicubic", "metrics": {...}} (SR)
    steps: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None  # the run folder (checkpoints...), for a local run

    @property
    def network(self) -> tuple[str, str, str]:
        return (self.task, self.dataset, self.arch)

    @property
    def comparable(self) -> tuple:
        """Runs that may share a row of a report: same network and same :attr:`setting`."""
        return (self.network, self.setting)

    def metric(self, name: str) -> float | None:
        value = _lookup(self.final, name)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    def curve(self, name: str) -> tuple[list[int], list[float]]:
        steps, values = [], []
        for row in self.history:
            value = _lookup(row, name)
            if value is not None and row.get("step") is not None:
                steps.append(int(row["step"]))
                values.append(float(value))
        return steps, values


def _lookup(values: dict[str, Any], name: str) -> Any:
    value = values.get(name)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _is_setting(name: str) -> bool:
    leaf = name.rpartition(".")[2]
    # "_wandb" and the like: the logger's own bookkeeping
    return leaf not in _NOT_SETTINGS and not leaf.startswith(_NOT_SETTING_PREFIXES) and not name.startswith("_")


def comparable_setting(config: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The fields of a run's config that a baseline and a variant must share to be compared
    (evaluation sets, protocol, model options other than the attention, recipe...), as sorted
    ``(dotted name, JSON value)`` pairs."""
    # W&B spells nested keys a/b.
    flat = {name.replace("/", "."): value for name, value in flatten(config, ".").items()}
    setting = {name: json.dumps(value, sort_keys=True, default=str)
               for name, value in flat.items() if _is_setting(name)}
    for name in _WEIGHT_FILES:
        if name in setting:
            setting[name] = json.dumps(flat[name] is not None)
    return tuple(sorted(setting.items()))


def group_comparable(runs: Iterable[Run]) -> list[tuple[tuple, str, dict[str, list[Run]]]]:
    """``(network, setting, {attention variant: runs})`` per group, sorted: only runs of one network
    scored the same way with the same options (evaluation sets, protocol, model options...) share a
    group. ``setting`` says what sets a group apart from the other groups of its network, e.g.
    ``model.global_residual=true`` ("" when the network ran with one setting only)."""
    groups: dict[tuple, dict[str, list[Run]]] = {}
    for run in runs:
        groups.setdefault(run.comparable, {}).setdefault(run.attention, []).append(run)
    result = []
    for network, setting in sorted(groups):
        values = [dict(other) for net, other in groups if net == network]
        differing = sorted({name for v in values for name in v
                            if len({w.get(name, "–") for w in values}) > 1})
        label = ", ".join(f"{name}={dict(setting).get(name, '–')}" for name in differing)
        result.append((network, label, groups[(network, setting)]))
    return result


def run_from_summary(summary: dict[str, Any], history: list[dict[str, Any]], source: str) -> Run:
    """Build a :class:`Run` from a ``summary.json`` dict and its eval history rows."""
    config = summary.get("config") or {}
    get = lambda key, default=None: summary.get(key, config.get(key, default))  # noqa: E731
    experiment = get("experiment") or {}
    attention = str(get("attention") or BASELINE)
    if attention == "bam" and (summary.get("placement") or config.get("placement")) == "block":
        attention = "bam-c"  # BAM in every block: the paper's BAM-C
    for key, present in (("primary_metric", get("primary_metric")), ("final", isinstance(summary.get("final"), dict))):
        if not present:
            raise ValueError(f"{source}: run summary lacks {key!r} (was the run finished?)")
    return Run(
        name=str(get("name") or Path(source).name),
        task=str(get("task") or "?"),
        dataset=str(get("dataset") or "?"),
        arch=str(get("arch") or "?"),
        # An ablation row differs from its neighbours by more than the module name (e.g.
        # "bam(dilation=1)"): the run's own variant label keeps such rows apart.
        attention=str(get("variant") or attention),
        seed=get("seed"),
        primary_metric=str(get("primary_metric")),
        final=dict(summary.get("final") or {}),
        params=get("params"),
        macs=get("macs"),
        group=str(get("group") or ""),
        wall_time_s=get("wall_time_s"),
        history=history,
        protocol=str(get("protocol") or config.get("protocol") or ""),
        source=source,
        status=str(get("status") or ""),
        label=str(experiment.get("label") or ""),
        paper=dict(experiment.get("paper") or {}),
        setting=comparable_setting(config),
        reference=dict(summary.get("reference") or {}),
        steps=get("steps"),
        config=dict(config),
    )


def load_local_run(run_dir: Path) -> Run:
    summary = load_summary(run_dir)
    history_file = run_dir / str(summary.get("history_file") or "metrics.jsonl")
    history = []
    if history_file.is_file():
        lines = [line for line in history_file.read_text().splitlines() if line.strip()]
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                if number == len(lines):
                    continue  # the last line of a run killed while appending to it
                raise ValueError(f"{history_file}, line {number}: not valid JSON ({error})") from None
            if row.get("split", "eval") == "eval":
                history.append(row)
    run = run_from_summary(summary, history, str(run_dir))
    run.per_sample_file = _existing(run_dir / PER_SAMPLE_FILE)
    run.folder = run_dir
    return run


def _existing(path: Path) -> str:
    return str(path) if path.is_file() else ""


def _run_from_wandb(data: dict[str, Any]) -> Run:
    """A :class:`Run` from a W&B API run (id, name, group, config, summary, history, folder)."""
    summary = {**data["config"], **{k: v for k, v in data["summary"].items() if not k.startswith("_")}}
    summary.setdefault("group", data["group"])
    summary.setdefault("name", data["name"] or data["id"])
    summary.setdefault("config", dict(data["config"]))
    # The trainer logs the final metrics in the W&B summary as "final/<metric>".
    if not isinstance(summary.get("final"), dict):
        summary["final"] = {k[len("final/"):]: v for k, v in data["summary"].items() if k.startswith("final/")}
    # The trainer logs evaluations to W&B as "eval/<metric>": the history keeps those rows, as
    # metrics.jsonl holds them.
    history = []
    for row in data["history"]:
        metrics = {key[len("eval/"):]: value for key, value in row.items() if key.startswith("eval/")}
        if metrics:
            history.append({"step": row.get("_step"), **metrics})
    run = run_from_summary(summary, history, data["folder"])
    run.per_sample_file = data["per_sample_file"]
    return run


def load_api_runs(path: str, group: str | None = None) -> list[Run]:  # pragma: no cover - needs a network
    """Fetch runs of ``entity/project`` (optionally one experiment group) through the W&B API."""
    import wandb

    api = wandb.Api()
    filters = {"group": group} if group else {}
    return [_run_from_wandb({"id": remote.id, "name": remote.name, "group": remote.group or "",
                               "config": dict(remote.config), "summary": {k: v for k, v in remote.summary.items()},
                               "history": list(remote.scan_history()), "folder": remote.url,
                               "per_sample_file": _download_per_sample(remote)})
            for remote in api.runs(path, filters=filters) if remote.job_type != COMPARISON_JOB]


def _download_per_sample(remote) -> str:  # pragma: no cover - needs a network
    """The run's per_sample.npz, fetched into ``reports/.wandb-files/<run id>/`` ("" if it has none)."""
    folder = Path("reports") / ".wandb-files" / remote.id
    try:
        remote.file(PER_SAMPLE_FILE).download(root=str(folder), replace=True)
    except Exception:  # noqa: BLE001 - an older run without the file, or no access to it
        return ""
    return _existing(folder / PER_SAMPLE_FILE)


def discover_runs(paths: Iterable[str | Path], group: str | None = None) -> list[Run]:
    """Load every finished run found under ``paths`` (folders holding a ``summary.json``). A run
    reached through several of ``paths`` (a folder and its parent) is read once, so that it never
    counts as another seed."""
    paths = [Path(path) for path in paths]
    run_dirs: dict[Path, None] = {}
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist (expected a run folder or a folder of runs)")
        found = [path / "summary.json"] if (path / "summary.json").is_file() else path.rglob("summary.json")
        run_dirs.update(dict.fromkeys(sorted(p.parent.resolve() for p in found)))
    runs = [load_local_run(d) for d in run_dirs]
    if group:
        runs = [r for r in runs if r.group == group]
    finished = []  # an interrupted, failed or running run has no final metrics to stand for a seed
    for run in runs:
        if run.status not in ("", "completed"):
            note(f"leaving out {run.source} (status {run.status!r})")
        elif not run.final:
            note(f"leaving out {run.source} (no final metrics: still running, or killed)")
        else:
            finished.append(run)
    if not finished:
        where = ", ".join(map(str, paths))
        raise FileNotFoundError(f"no finished runs (summary.json) found under {where}"
                                + (f" in group {group!r}" if group else "")
                                + (f"; {len(runs)} unfinished left out" if runs else ""))
    return finished
