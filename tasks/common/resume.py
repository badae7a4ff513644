"""What ``--resume`` may change, and how.

A resumed run is the same run: options that would change the network, the data, the loss or the
seed are refused (:func:`check_unchanged`, one line naming the option and the checkpoint's value).
How long it trains, how often it evaluates and logs, how it runs (processes, workers, compile,
precision) and the optimiser settings may change; they are recorded with the step they hold from.

Optimiser options given together with ``--resume`` apply from the resumed step on, or are refused:
``accelerator.load_state`` restores the optimiser's parameter groups as they were saved, so a new
``--lr`` (or momentum, weight decay, betas) would silently lose against the checkpoint while the
run's record showed the new value. Instead the options of the resumed command win from the
resumed step on, and the trainer records the change (``optimizer_changes`` in ``config.json``).

A new base learning rate rescales the schedule: the current rate, the scheduler's ``base_lrs``
and, for cosine annealing, its floor (which this repository sets as a fraction of ``--lr``) are
multiplied by new / old, which continues every schedule below exactly as if it had started from
the new rate. Other schedulers keep state that cannot be rescaled safely, so a new rate is
refused there with a message saying what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tasks.common.tracking import flatten

# Config fields (by their last name) that a resumed run may change: the schedule's length and
# cadence, how the run executes, and the optimiser settings (applied and recorded as
# optimizer_changes by apply_requested_settings, so check_unchanged leaves them out).
_OPTIMIZER_FIELDS = frozenset({"lr", "betas", "momentum", "weight_decay"})
CHANGEABLE = _OPTIMIZER_FIELDS | {
    "max_steps", "epochs", "eval_every", "log_every", "num_workers", "compile", "channels_last",
    "mixed_precision", "num_processes", "batch_size_per_process", "progress", "tags", "group", "num_pictures",
    "grad_clip",
}
_RECORDS = ("optimizer_changes", "resume_changes")  # what the config records of earlier resumes

# Schedulers whose next rate is the current one times a factor (or base_lrs times a factor).
_RESCALABLE = (torch.optim.lr_scheduler.LambdaLR, torch.optim.lr_scheduler.MultiplicativeLR,
               torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler.MultiStepLR,
               torch.optim.lr_scheduler.ExponentialLR, torch.optim.lr_scheduler.CosineAnnealingLR)
_NOT_SETTINGS = ("params", "lr", "initial_lr")


def optimizer_settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's hyperparameters; ``lr`` is the base rate (a scheduler's ``initial_lr``)."""
    return [{**{key: value for key, value in group.items() if key not in _NOT_SETTINGS},
             "lr": group.get("initial_lr", group["lr"])} for group in optimizer.param_groups]


def _plain(value: Any) -> Any:
    """A setting as JSON can hold it, and compares (betas are tuples, a rate may be a tensor)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


def _differences(requested: list[dict], loaded: list[dict]) -> list[tuple[int, str, Any, Any]]:
    """(group, setting, checkpoint's value, requested value) for every setting that differs."""
    return [(index, key, have[key], value) for index, (want, have) in enumerate(zip(requested, loaded))
            for key, value in want.items() if key in have and _plain(have[key]) != _plain(value)]


def _refuse_unscalable(scheduler, differences, checkpoint: Path) -> None:
    rates = [(old, new) for _, key, old, new in differences if key == "lr"]
    if not rates or scheduler is None:
        return
    if not isinstance(scheduler, _RESCALABLE):
        old, new = rates[0]
        raise ValueError(f"--resume: this run asks for a learning rate of {new}, but {checkpoint} was trained with "
                         f"{old} and its {type(scheduler).__name__} schedule cannot take a new rate midway; resume "
                         "with the checkpoint's rate (leave the option as it was) or start a new run without --resume")
    ratios = {new / old for old, new in rates}
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and len(ratios) > 1:
        raise ValueError(f"--resume: the parameter groups' learning rates change by different factors "
                         f"{sorted(ratios)}, but the cosine schedule of {checkpoint} has one floor for all; change "
                         "them alike or start a new run without --resume")


def _rescale_rate(optimizer, scheduler, index: int, old: float, new: float) -> None:
    ratio = new / old
    group = optimizer.param_groups[index]
    group["lr"] = group["lr"] * ratio
    if "initial_lr" in group:
        group["initial_lr"] = new
    if scheduler is None:
        return
    scheduler.base_lrs[index] = new
    if getattr(scheduler, "_last_lr", None) is not None:
        scheduler._last_lr[index] = group["lr"]
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        scheduler.eta_min *= ratio  # once: the groups' ratios were checked to be one


def apply_requested_settings(optimizer: torch.optim.Optimizer, scheduler, requested: list[dict[str, Any]],
                             checkpoint: Path) -> dict[str, list]:
    """Give the optimiser restored from ``checkpoint`` the ``requested`` settings (taken with
    :func:`optimizer_settings` before loading); returns ``{setting: [checkpoint's, new]}``.

    ``ValueError`` (before anything changes) when the rate changes under a scheduler that cannot
    be rescaled."""
    differences = _differences(requested, optimizer_settings(optimizer))
    _refuse_unscalable(scheduler, differences, checkpoint)
    changed: dict[str, list] = {}
    for index, key, old, new in differences:
        if key == "lr":
            _rescale_rate(optimizer, scheduler, index, old, new)
        else:
            optimizer.param_groups[index][key] = new
        label = key if len(requested) == 1 else f"{key} (group {index})"
        changed[label] = [_plain(old), _plain(new)]
    return changed


def _derived(name: str) -> bool:
    """Counts that follow from other fields (parameters, MACs): the field that made them differ is named instead."""
    leaf = name.rpartition(".")[2]
    return leaf in ("params", "macs") or leaf.startswith(("params_", "macs_"))


def _option(name: str) -> str:
    """The command-line option behind a config field: ``model.global_residual`` -> ``--global-residual``."""
    return "--" + name.rpartition(".")[2].replace("_", "-")


def check_unchanged(saved: dict[str, Any], requested: dict[str, Any], checkpoint: Path) -> dict[str, list]:
    """Refuse (ValueError) a resumed run whose config differs from the checkpoint's in a field
    that is not :data:`CHANGEABLE`; return the other changeable fields that differ (not the
    optimiser's), ``{field: [old, new]}``."""
    old, new = ({k: v for k, v in flatten(config, ".").items() if k not in _RECORDS}
                for config in (saved, requested))
    changed = {}
    # A preset or recipe decides many fields at once: name it first when it changed.
    for name in sorted(set(old) | set(new), key=lambda n: (n.rpartition(".")[2] not in ("preset", "recipe"), n)):
        leaf = name.rpartition(".")[2]
        if _derived(name) or _plain(old.get(name)) == _plain(new.get(name)):
            continue
        if leaf not in CHANGEABLE:
            raise ValueError(f"--resume: {_option(name)} would change {name} from {old.get(name)!r} (the value in "
                             f"{checkpoint}) to {new.get(name)!r}; a resumed run keeps its network, data, loss and "
                             "seed: resume without it, or start a new run")
        if leaf not in _OPTIMIZER_FIELDS:
            changed[name] = [_plain(old.get(name)), _plain(new.get(name))]
    return changed


def describe_changes(changed: dict[str, list]) -> str:
    return ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changed.items())
