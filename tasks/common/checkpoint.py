"""Checkpoints that are never half written.

A checkpoint is a folder of ``accelerator.save_state`` plus ``trainer_state.json`` (step, best
value, tracker run id...). It is written to ``<name>.tmp``, the state file last (it marks the
folder complete), then swapped in by renames: ``<name>`` -> ``<name>.old``, ``<name>.tmp`` ->
``<name>``, ``rm -r <name>.old``. A run killed at any moment leaves a complete checkpoint among
the three names; :func:`resolve_checkpoint` finds it. A save that fails (a full disk) raises
``WriteError`` on every process, naming the last complete checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Callable

from accelerate.utils import gather_object, load
from safetensors import SafetensorError, safe_open

from tasks.utils.files import WriteError, write_json_atomic

STATE_FILE = "trainer_state.json"


class _StepFailed(Exception):
    """A step of a save failed on some process (the text says which and how)."""


# What a full disk or an unwritable folder raises while saving: torch.save raises RuntimeError.
_WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


def is_complete(directory: str | os.PathLike) -> bool:
    return (Path(directory) / STATE_FILE).is_file()


def _sibling(directory: Path, suffix: str) -> Path:
    return directory.with_name(directory.name + suffix)


def last_complete(directory: str | os.PathLike) -> Path | None:
    """The complete checkpoint under ``directory``'s name without renaming anything (any process).
    A complete ``<name>.tmp`` was finished before the kill, so it wins over ``<name>.old``."""
    directory = Path(directory)
    candidates = (directory, _sibling(directory, ".tmp"), _sibling(directory, ".old"))
    return next((candidate for candidate in candidates if is_complete(candidate)), None)


def resolve_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The complete checkpoint stored under ``directory``'s name, or None, finishing an interrupted
    swap by renaming: only one (the main) process may call it."""
    directory = Path(directory)
    if (directory / "checkpoints").exists() and not is_complete(directory):
        return None  # a run folder, not a checkpoint: never rename it
    found = last_complete(directory)
    if found is None or found == directory:
        return found
    shutil.rmtree(directory, ignore_errors=True)  # an incomplete leftover with the final name, if any
    os.replace(found, directory)
    return directory


def find_resume_checkpoint(run_dir: str | os.PathLike, resume: bool | str | os.PathLike) -> Path | None:
    """Which checkpoint ``--resume`` means.

    ``True``: ``run_dir/checkpoints/last`` if present (else None: start fresh). A path: that
    checkpoint directory, or a run directory holding ``checkpoints/last``; missing -> FileNotFoundError.
    """
    if resume is False or resume is None:
        return None
    if resume is True:
        return resolve_checkpoint(Path(run_dir) / "checkpoints" / "last")
    path = Path(resume)
    if not path.exists() and not _sibling(path, ".tmp").exists() and not _sibling(path, ".old").exists():
        raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
    candidate = path / "checkpoints" / "last" if (path / "checkpoints").is_dir() else path
    found = resolve_checkpoint(candidate)
    if found is None:
        raise FileNotFoundError(
            f"--resume: {candidate} is not a complete checkpoint (no {STATE_FILE}); expected a checkpoint "
            "folder (RUN/checkpoints/last or best) or a run folder holding checkpoints/last"
        )
    return found


def read_trainer_state(directory: str | os.PathLike) -> dict:
    """The state file of a complete checkpoint (its presence is what makes it complete)."""
    path = Path(directory) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"checkpoint state file is not valid JSON: {path} ({error})") from None


# What Accelerate reads from its random-number file (it skips the file silently when it cannot, and
# the resumed run then draws other numbers than the original).
_RNG_FILE = "random_states_0.pkl"
_RNG_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")


def _pickle_problem(path: Path) -> str | None:
    """Load a ``torch.save`` file as Accelerate will, with ``weights_only`` (tensors and plain data
    only, nothing that runs code), mapped rather than read; what is wrong, or None."""
    try:
        content = load(path, map_location="cpu", mmap=True)
    except pickle.UnpicklingError as error:  # a pickle that names a function: it would run code
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" ({named.group(1)})" if named else ""
        return f"it holds an object other than tensors and plain data{what}, which is not loaded: unpickling it " \
               "could run code"
    except (RuntimeError, ValueError, OSError, EOFError) as error:
        return f"unreadable PyTorch file: {' '.join(str(error).split())[:200]}"
    if path.name.startswith("random_states_"):
        missing = [key for key in _RNG_KEYS if not isinstance(content, dict) or key not in content]
        if missing:
            return f"not Accelerate's random-number state (no {', '.join(missing)})"
    return None


def _file_problem(path: Path) -> str | None:
    """What is wrong with one file of a checkpoint, judged by its format's own checks; None if fine.

    safetensors files must cover their header's tensors; ``torch.save`` files are zip archives
    whose members carry CRCs (a torn or flipped byte shows), and they must load with
    ``weights_only`` as Accelerate loads them."""
    if not path.is_file():
        return None
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as error:
            return f"not a complete safetensors file: {error}"
    elif path.suffix in (".bin", ".pkl", ".pt"):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except zipfile.BadZipFile:
            return "not a complete PyTorch file (truncated?)"
        except OSError as error:
            return f"it cannot be read ({error.strerror or error})"
        if bad is not None:
            return f"corrupt data in its member {bad} (checksum mismatch)"
        return _pickle_problem(path)
    elif path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            return f"not valid JSON: {error}"
    return None


def find_damaged_file(directory: str | os.PathLike) -> tuple[Path, str] | None:
    """The first truncated, corrupt, unsafe or missing file of a checkpoint folder and what is wrong
    with it. A folder whose path is not UTF-8 raises ValueError: Accelerate loads its weights with
    safetensors, which opens only UTF-8 paths."""
    directory = Path(directory)
    try:
        str(directory.resolve()).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"--resume: {directory} cannot be resumed: its path is not valid UTF-8, and the safetensors "
                         "library Accelerate loads checkpoints with opens only UTF-8 paths; rename the folder "
                         "(or the one above it that has the name) and resume from there") from None
    for path in sorted(directory.iterdir()):
        problem = _file_problem(path)
        if problem is not None:
            return path, problem
    if not (directory / _RNG_FILE).is_file():
        return directory / _RNG_FILE, "it is missing, and without it the resumed run would draw other random numbers"
    return None


def _swap_in(tmp: Path, final: Path) -> None:
    old = _sibling(final, ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _together(accelerator, action: Callable[[], None], everyone: bool = False) -> None:
    """``action()`` on the main process (or ``everyone``), then every process learns whether any of
    them failed to write, and all raise together (a plain barrier would leave the others waiting)."""
    failure = None
    try:
        if everyone or accelerator.is_main_process:
            action()
    except _WRITE_ERRORS as error:
        failure = error
    text = None if failure is None else f"{type(failure).__name__}: {' '.join(str(failure).split())}"
    # gather_object returns the list itself in a single process
    texts = [t for t in gather_object([text]) if t is not None]
    if texts:
        raise _StepFailed(texts[0]) from failure


def _last_good(directory: Path) -> str:
    found = last_complete(directory)
    if found is None:
        return "no complete checkpoint has been written yet"
    try:
        step = read_trainer_state(found).get("step")
    except (OSError, ValueError):
        step = "?"
    return f"the last complete checkpoint is {found} (step {step}); make room and continue it with --resume"


def save_checkpoint(accelerator, directory: str | os.PathLike, state: dict,
                    extra: Callable[[Path], None] | None = None,
                    per_process: Callable[[Path], None] | None = None,
                    best: Path | None = None) -> Path:
    """Save the accelerator's state and ``state`` (JSON) to ``directory`` atomically.

    Every process must call it (Accelerate writes one RNG file per process); only the main process
    touches the file system otherwise. ``extra(folder)`` (main process) and ``per_process(folder)``
    (every process) may add files before the checkpoint is marked complete, so they are part of
    the atomic swap; once it is in place it is linked to ``best``, if given. A failed write raises
    ``WriteError`` on every process.
    """
    directory = Path(directory)
    tmp = _sibling(directory, ".tmp")

    def fresh_folder() -> None:
        if tmp.exists():  # a leftover of a save killed midway: incomplete by construction
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)

    def write_state() -> None:
        accelerator.save_state(str(tmp))
        if per_process is not None:
            per_process(tmp)

    def complete_and_swap() -> None:
        if extra is not None:
            extra(tmp)
        write_json_atomic(tmp / STATE_FILE, state)  # last file written: marks it complete
        _swap_in(tmp, directory)

    try:
        _together(accelerator, fresh_folder)
        _together(accelerator, write_state, everyone=True)
        _together(accelerator, complete_and_swap)
        if best is not None:
            _together(accelerator, lambda: link_checkpoint(directory, best))
    except _StepFailed as failure:
        if accelerator.is_main_process and not is_complete(tmp):
            shutil.rmtree(tmp, ignore_errors=True)  # an incomplete copy only takes the space left
        raise WriteError(f"could not write the checkpoint {directory} at step {state.get('step')} "
                         f"({failure}); {_last_good(directory)}") from failure.__cause__
    return directory


def checkpoint_bytes(model) -> int:
    """Disk space a save may need, from the model's size: the weights twice (Accelerate's copy
    and network.safetensors), optimizer state of up to twice the weights (Adam's two moments),
    and all of it twice while the new checkpoint is written beside the last one; plus room for
    the small files."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 2 * (2 * weights + 2 * weights) + 16 * 2**20


def link_checkpoint(source: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Atomically make ``directory`` a copy of the complete checkpoint ``source`` (main process only).

    Files are hard-linked when the file system allows it (checkpoint files are never modified in
    place, only replaced), so keeping ``best`` next to ``last`` costs no extra disk space.
    """
    source, directory = Path(source), Path(directory)
    tmp = _sibling(directory, ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    # The state file is linked last so that an interrupted copy is never taken for a checkpoint.
    try:
        shutil.copytree(source, tmp, copy_function=link_or_copy, ignore=shutil.ignore_patterns(STATE_FILE))
        link_or_copy(str(source / STATE_FILE), str(tmp / STATE_FILE))
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a partial copy would only hold on to disk space
        raise
    _swap_in(tmp, directory)
    return directory


def repair_best(run_dir: str | os.PathLike, last: str | os.PathLike, best_step: int | None) -> None:
    """A kill between writing ``last`` and copying it to ``best`` leaves ``best`` one evaluation
    behind the best step that ``last`` records: copy it now (main process only)."""
    last = Path(last)
    if best_step is None or read_trainer_state(last).get("step") != best_step:
        return
    best = resolve_checkpoint(Path(run_dir) / "checkpoints" / "best")
    if best is None or read_trainer_state(best).get("step") != best_step:
        link_checkpoint(last, Path(run_dir) / "checkpoints" / "best")
