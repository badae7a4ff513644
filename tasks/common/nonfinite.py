"""What a run does when numbers stop being numbers: stop at once, say why, keep the last good
checkpoint (the trainer never saves weights that are not finite)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class NonFiniteLossError(RuntimeError):
    """The training loss (or the gradient, or the weights) became NaN or infinite."""


def kept_checkpoint_note(run_dir: str | Path) -> str:
    last = Path(run_dir) / "checkpoints" / "last"
    return f"; the last good checkpoint is kept in {last}" if last.is_dir() else "; no checkpoint was written yet"


def check_losses(values: torch.Tensor, step: int, run_dir: str | Path, mixed_precision: str = "no",
                 grad_clip: float | None = None, what: str = "training loss") -> None:
    """Raise :class:`NonFiniteLossError` when any of ``values`` (one per process) is not finite."""
    if bool(torch.isfinite(values).all()):
        return
    hint = "lower the learning rate"
    if mixed_precision == "fp16":
        hint += ", or disable fp16 (--mixed-precision bf16 or no)"
    elif grad_clip is None:
        hint += " or add gradient clipping"
    shown = ", ".join(f"{v:g}" for v in values.tolist())
    raise NonFiniteLossError(f"non-finite {what} ({shown}) at step {step}: {hint}"
                             f"{kept_checkpoint_note(run_dir)}")


def _non_finite_tensors(model: nn.Module) -> list[str]:
    """Names of the non-finite parameters and buffers, with one device-to-host transfer (a flag
    per tensor is computed where the tensors live and fetched at once)."""
    tensors = [(name, t) for name, t in (*model.named_parameters(), *model.named_buffers())
               if t.is_floating_point() or t.is_complex()]
    if not tensors:
        return []
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in tensors]).cpu()
    return [name for (name, _), ok in zip(tensors, finite.tolist()) if not ok]


def check_weights(model: nn.Module, step: int, run_dir: str | Path, accelerator) -> None:
    """Raise :class:`NonFiniteLossError` when a weight is not finite (a gradient overflowed while
    the loss stayed finite). The count is summed over the processes, so that all processes stop
    together when one of them holds a bad shard."""
    names = _non_finite_tensors(model)
    count = torch.tensor([float(len(names))], device=accelerator.device)
    if accelerator.reduce(count, "sum").item() == 0:
        return
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise NonFiniteLossError(
        f"non-finite weights after step {step} ({shown or 'on another process'}): a gradient overflowed although "
        f"the loss was finite; lower the learning rate or add gradient clipping{kept_checkpoint_note(run_dir)}")
