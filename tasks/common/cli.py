"""Command-line options shared by every training command, and clean error exits."""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import PartialState

from tasks.common.compile import COMPILE_MODES
from tasks.common.distributed import (MIXED_PRECISION_CHOICES, cpu_processes_wanted, decided_on_main_process,
                                      shutdown_distributed)
from tasks.common.nonfinite import NonFiniteLossError
from tasks.common.stopping import RunInterrupted
from tasks.common.tracking import WANDB_MODES
from tasks.utils.files import WriteError
from tasks.utils.messages import note
from tasks.utils.processes import is_main_process, world_size

MAX_SEED = 2**32 - 1  # NumPy's seed range
DEBUG_VARIABLE = "BAM_DEBUG"  # set to 1: expected failures print their full traceback too
# How PyTorch hands a DataLoader worker's exception to the main process: the same type, with the
# worker's formatted traceback as its message.
_WORKER_ERROR = re.compile(r"Caught (?P<type>\w+) in (?:DataLoader worker process \d+|pin memory thread[^.]*)\.\n"
                           r"Original (?P<traceback>Traceback .*)", re.S)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..{MAX_SEED}, got {text}")
    return value


def _decay(text: str) -> float | None:
    if text.lower() in ("none", "off"):  # a preset's average turned off
        return None
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a decay in [0, 1), e.g. 0.999, got {text}")
    return value


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--data-root`` (resolved by ``tasks.data.root.data_root``)."""
    parser.add_argument("--data-root", help="data root (default: $BAM_DATA_ROOT, else the repository's datasets/ "
                                            "folder)")


def device_arg(text: str) -> str:
    """``--device``: a torch device name, refused at the command line when it names a GPU this
    machine does not have (else the first tensor moved there fails deep inside torch)."""
    try:
        device = torch.device(text)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device (cpu, cuda, cuda:1, ...)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available (use --device cpu)")
    return text


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_arg, default=default_device(),
                        help="default: cuda if a GPU is there, else cpu")


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """The options the detection and parsing evaluation commands spell the same way."""
    parser.add_argument("--checkpoint", required=True,
                        help="a run folder (its best checkpoint), a checkpoint folder or its network.json")
    add_data_args(parser)
    parser.add_argument("--split", default="val", choices=("train", "val"),
                        help="default: %(default)s")
    parser.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                        help="the first N images only (default: all)")
    parser.add_argument("--num-pictures", type=non_negative_int, default=0, metavar="N",
                        help="save pictures of the first N predictions in --output-dir "
                             "(default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="folder for what the command writes (default: beside the checkpoint's run)")
    add_device_arg(parser)
    parser.add_argument("--num-workers", type=non_negative_int, default=2,
                        help="data loading worker processes (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def evaluation_folder(model_file: str | os.PathLike) -> Path:
    """Where an evaluation command writes by default: ``<run>/evaluation`` for a checkpoint of a
    run (``<run>/checkpoints/<name>/network.json``), else beside the model file."""
    folder = Path(model_file).parent
    if folder.parent.name == "checkpoints":
        folder = folder.parent.parent
    return folder / "evaluation"


def add_run_args(parser: argparse.ArgumentParser, defaults: dict | None = None) -> argparse.ArgumentParser:
    """Add the run options every task shares; ``defaults`` (keyed by dest) sets task defaults."""
    add_data_args(parser)
    group = parser.add_argument_group("run")
    group.add_argument("--output-dir", default="runs", help="parent folder of run folders (default: %(default)s)")
    group.add_argument("--run-name", help="run folder name (default: derived from the config)")
    group.add_argument("--seed", type=_seed, default=0, help="random seed (default: %(default)s)")
    group.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                       help="resume from RUN_DIR/checkpoints/last if present, or from the given checkpoint/run folder")
    group.add_argument("--mixed-precision", choices=MIXED_PRECISION_CHOICES,
                       help="mixed precision of the training steps through Accelerate; evaluation and saved "
                            "networks stay float32 (default: %(default)s; None: the `accelerate launch "
                            "--mixed_precision` / `accelerate config` setting, else no)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                       help="train in the channels_last memory layout (faster convolutions with oneDNN on a CPU "
                            "and on tensor-core GPUs with --mixed-precision bf16 or fp16; default: %(default)s)")
    group.add_argument("--side-by-side", action=argparse.BooleanOptionalAction, default=False,
                       help="on a machine without a GPU, train the runs of a comparison at the same time, one "
                            "process each with its share of the cores (short steps use a second core poorly); "
                            "one after the other otherwise (default: %(default)s)")
    group.add_argument("--compile", choices=COMPILE_MODES, default="off",
                       help="torch.compile the training steps; reduce-overhead adds CUDA graphs (fixed batch "
                            "shapes, GPU). Checkpoints and evaluation are the same as without (default: %(default)s)")
    group.add_argument("--wandb", choices=WANDB_MODES, default="auto",
                       help="W&B mode; auto = online with an API key and an API that answers, else offline to disk")
    group.add_argument("--wandb-project", default="bam", help="W&B project (default: %(default)s)")
    group.add_argument("--group",
                       help="experiment group shared by the runs to compare (e.g. baseline and BAM)")
    group.add_argument("--tags", nargs="*", default=[], help="extra W&B tags")
    group.add_argument("--eval-every", type=non_negative_int, default=1000,
                       help="evaluate and checkpoint every N optimizer steps, 0 = only at the end (default: %(default)s)")
    group.add_argument("--max-steps", type=positive_int,
                       help="number of optimizer steps (default: %(default)s)")
    group.add_argument("--log-every", type=positive_int, default=50,
                       help="log training metrics every N steps (default: %(default)s)")
    group.add_argument("--num-workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                       help="data loading worker processes per training process (default: %(default)s)")
    group.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                       help="evaluate on the first N images of each evaluation set only (quick checks, not a "
                            "benchmark number; default: all)")
    group.add_argument("--num-pictures", type=non_negative_int, default=0, metavar="N",
                       help="pictures of the predictions saved at each evaluation (default: %(default)s)")
    group.add_argument("--ema", type=_decay, metavar="DECAY",
                       help="evaluate and export an exponential moving average of the weights, e.g. 0.999, with "
                            "BatchNorm statistics of its own; none turns it off (default: %(default)s)")
    group.add_argument("--batch-size", type=positive_int,
                       help="training batch over all processes, split evenly between them (default: "
                            "the recipe's, %(default)s)")
    parser.set_defaults(**(defaults or {}))  # argparse puts them in the actions: --help shows them
    return parser


def _used(path: Path) -> bool:
    return path.exists() and any(path.iterdir())


# A file name may have this many bytes on the usual file systems (ext4, XFS, APFS, NTFS in UTF-16
# units); room is kept for the "-2" a second run of the same name gets, and for "-comparison".
_MAX_NAME_BYTES = 255 - len("-comparison-99")


def _check_folder_name(name: str) -> None:
    """Refuse a run name that no file system takes as one folder name, before anything is created."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"--run-name {name!r} must be one folder name (no '/')")
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > _MAX_NAME_BYTES:
        raise ValueError(f"--run-name is {size} bytes long; a run folder name may have at most {_MAX_NAME_BYTES} "
                         "(file names stop at 255 bytes)")


def _choose_run_dir(args: argparse.Namespace, default_name: str) -> Path:
    if args.resume not in (False, True, None) and not args.run_name:
        # `--resume runs/x` or `--resume runs/x/checkpoints/last`: continue writing into that run.
        path = Path(args.resume)
        if path.parent.name == "checkpoints":
            return path.parent.parent
        if (path / "checkpoints").is_dir():
            return path
    name = args.run_name or default_name
    _check_folder_name(name)
    base = Path(args.output_dir) / name
    if args.resume or not _used(base):
        return base
    # A finished or crashed run of the same name: never overwrite it silently.
    counter = 2
    while _used(base.with_name(f"{base.name}-{counter}")):
        counter += 1
    chosen = base.with_name(f"{base.name}-{counter}")
    note(f"{base} already holds a run (use --resume to continue it); writing to {chosen}")
    return chosen


def run_dir_for(args: argparse.Namespace, default_name: str) -> Path:
    """The run folder: ``output_dir/(run_name or default_name)``.

    Without ``--resume``, an existing non-empty folder is kept and ``-2``, ``-3``... is appended.
    With ``--resume PATH`` and no ``--run-name``, the run that PATH belongs to. In a multi-process
    run the main process decides and the others receive its answer.
    """
    if world_size() <= 1:
        return _choose_run_dir(args, default_name)
    state = PartialState(cpu=cpu_processes_wanted())
    return decided_on_main_process(lambda: _choose_run_dir(args, default_name), state)


def _final_exception_text(formatted: str, type_name: str) -> str:
    """The message of the last exception in a formatted traceback: what follows its last frame (a
    ``  File`` line, then the frame's source line and markers, indented further)."""
    text = re.split(r"^  File .*\n(?:    .*\n)*", formatted, flags=re.M)[-1].rstrip("\n")
    return re.sub(rf"^(?:[\w.]+\.)?{re.escape(type_name)}(?:: |$)", "", text, count=1)


def user_message(error: BaseException) -> str:
    """One line for the user: the error's message and notes, whitespace collapsed.

    An error raised inside a DataLoader worker reaches the main process as a copy whose message is
    the worker's whole traceback; the user reads the worker's own message instead, the same line
    as with ``--num-workers 0``.
    """
    text = str(error)
    worker = _WORKER_ERROR.match(text)
    if worker:
        text = _final_exception_text(worker["traceback"], worker["type"])
    parts = [text, *getattr(error, "__notes__", ())]
    return " ".join(" ".join(parts).split()) or type(error).__name__


# The failures a command reports as one line: bad input, a non-finite loss, a failed write.
EXPECTED_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, NonFiniteLossError,
                   WriteError)


def run_cli(main_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``main_fn``; turn :data:`EXPECTED_ERRORS` into ``error: ...`` on stderr and exit code 2
    (``BAM_DEBUG=1``: with their traceback, for an error in a DataLoader worker the worker's);
    anything else is a bug and keeps its traceback. After a success, the processes of a
    multi-process run leave their process group together."""
    if hasattr(sys.stdout, "reconfigure"):  # a notebook's or a test's stdout may be another stream
        sys.stdout.reconfigure(errors="backslashreplace")  # a path that is not UTF-8 prints, escaped
    try:
        result = main_fn(*args, **kwargs)
        shutdown_distributed()
        return result
    except EXPECTED_ERRORS as error:
        if os.environ.get(DEBUG_VARIABLE, "").lower() not in ("", "0", "false", "no"):
            traceback.print_exception(error, file=sys.stderr)
        print(f"error: {user_message(error)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except RunInterrupted as stop:  # saved: say how to go on, exit with a code a job script can act on
        if is_main_process():
            print(str(stop), file=sys.stderr, flush=True)
        shutdown_distributed()
        raise SystemExit(stop.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted at once: the last complete checkpoint, if there is one, is kept (the same command "
              "with --resume continues from it)", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
