"""Accelerate set-up shared by every command: the Accelerator, evaluation loaders sharded over the
processes, answers decided once on the main process, and a clean exit from the process group."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list

from tasks.utils.messages import note_once
from tasks.utils.processes import cores, keep_freed_memory, world_size

MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")


def cpu_processes_wanted() -> bool:
    """True when launched as several processes but no GPU is there: they must be CPU processes."""
    return not torch.cuda.is_available() and world_size() > 1


def make_accelerator(mixed_precision: str | None = "no", cpu: bool = False,
                     fixed_shapes: bool = True) -> Accelerator:
    """The Accelerator the trainer uses (schedulers step once per optimizer step, data order seeded).

    ``mixed_precision=None`` takes ``accelerate launch``'s setting (else "no"). Several processes on
    a machine without a GPU run as gloo CPU processes, not as independent copies of one run.
    ``fixed_shapes`` (SR, classification) lets cuDNN benchmark its kernels once.
    """
    cpu = cpu or cpu_processes_wanted()
    if mixed_precision is None:
        mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"--mixed-precision must be no, fp16 or bf16, got {mixed_precision!r}")
    if mixed_precision == "fp16" and (cpu or not torch.cuda.is_available()):
        raise ValueError("--mixed-precision fp16 needs a GPU; use bf16 or no on the CPU")
    _forget_other_precision(mixed_precision)
    if torch.cuda.is_available() and not cpu:
        # fp32 matrix products may use TF32, as cuDNN's convolutions already do by default.
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = fixed_shapes
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        cpu=cpu,
        # Schedulers are defined in optimizer steps of this loop; Accelerate would otherwise step
        # them once per process.
        step_scheduler_with_optimizer=False,
        # A plain shuffling DataLoader gets a sampler whose order depends on (seed, epoch) only.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if accelerator.device.type == "cpu":
        _use_every_core(accelerator.num_processes)
        keep_freed_memory()  # activations are malloc'd: no page faults for each step's new ones
    return accelerator


def _forget_other_precision(mixed_precision: str) -> None:
    """Accelerate keeps one state per process and refuses an Accelerator with another mixed
    precision. A single process that runs two commands (a notebook: an SR run with
    --mixed-precision bf16, then a classification in float32) starts the second afresh; the
    processes of a distributed run never do (their process group lives in that state)."""
    previous = AcceleratorState._shared_state.get("_mixed_precision", mixed_precision)
    if previous != mixed_precision and world_size() == 1:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def launcher_set_one_thread() -> bool:
    """True when ``accelerate launch`` set OMP_NUM_THREADS=1 by its own default: the launcher (our
    parent) did not have the variable."""
    if os.environ.get("OMP_NUM_THREADS") != "1" or "ACCELERATE_DYNAMO_BACKEND" not in os.environ:
        return False  # not one thread, or not started by `accelerate launch`
    try:
        parent = Path(f"/proc/{os.getppid()}/environ").read_bytes().split(b"\0")
    except OSError:  # no /proc (not Linux): the user's intent cannot be told, keep their setting
        return False
    return not any(entry.startswith(b"OMP_NUM_THREADS=") for entry in parent)


def _use_every_core(num_processes: int) -> None:
    """A single CPU process computes on every core (``accelerate launch``'s default of one thread made
    the main SR job take 9 minutes instead of 5); a thread count the user set is kept."""
    available = cores()
    if num_processes == 1 and torch.get_num_threads() == 1 < available and launcher_set_one_thread():
        torch.set_num_threads(available)
        note_once(f"one CPU process: computing on all {available} cores (`accelerate launch` had set OMP_NUM_THREADS=1; "
                  "set OMP_NUM_THREADS yourself to choose)")


def prepare_eval_loader(accelerator: Accelerator, loader: torch.utils.data.DataLoader):
    """Shard an evaluation loader over the processes (use with ``accelerator.gather_for_metrics``);
    unlike ``accelerator.prepare`` it does not register the loader for checkpointing."""
    return prepare_data_loader(
        loader, device=accelerator.device, num_processes=accelerator.num_processes,
        process_index=accelerator.process_index, put_on_device=True, even_batches=True,
    )


def decided_on_main_process(decide: Callable[[], Any], state) -> Any:
    """``decide()`` on the main process only (it may create or rename folders); its answer, or the
    bad-input error it raised, reaches every process of ``state`` (an Accelerator or PartialState),
    so that they all go on, or all stop, together instead of waiting for each other for ever."""
    outcome: list = [None, None]  # [answer, error]
    if state.is_main_process:
        try:
            outcome[0] = decide()
        except (ValueError, OSError) as error:  # FileNotFoundError and NotADirectoryError included
            outcome[1] = error
    if state.num_processes > 1:
        broadcast_object_list(outcome, from_process=0)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def shutdown_distributed() -> None:
    """Leave the process group cleanly (every process, at the end of a command): a gloo process that
    exits with it still up can die in C++ teardown, failing a run that had finished."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # nobody tears down while another process still talks to it
        dist.destroy_process_group()


def sync_buffers(model: torch.nn.Module, accelerator: Accelerator) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics), so that every process evaluates
    the network the checkpoint stores (DDP broadcasts them before each training forward too)."""
    if accelerator.num_processes == 1:
        return
    for buffer in accelerator.unwrap_model(model).buffers():
        dist.broadcast(buffer.data, src=0)
