"""Stopping a run on request without losing work: scheduler signals and one run per folder.

A cluster scheduler ends a job with SIGTERM (SLURM: before it kills it, and with ``--signal``
before a time limit, often SIGUSR1); a person presses Ctrl-C (SIGINT). :class:`StopSignals` turns
each of them into a request that the training loop honours after the step it is in: every
process finishes that step, they save one checkpoint together, the summary records the step
reached, and the command exits with ``128 + signal number`` (143 for SIGTERM, 138 for SIGUSR1,
130 for Ctrl-C: the shell's convention, which a job script can test to requeue itself). A signal
during an evaluation of a one-process run abandons the evaluation (the step's weights are saved,
and ``--resume`` evaluates them first); with several processes the evaluation, which they run in
lockstep, ends first. A second Ctrl-C stops at once.

:class:`RunLock` keeps two processes from training into one run folder at the same time.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # registers its exit handler before ours below, so ours runs first
import os
import signal
import threading
from pathlib import Path

import torch

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


class RunInterrupted(Exception):
    """The run stopped on a signal after saving; ``exit_code`` is 128 + the signal's number."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class EvaluationInterrupted(Exception):
    """A stop signal arrived during the evaluation of a one-process run."""


class StopSignals:
    """While installed (``with StopSignals() as stop``), SIGTERM, SIGINT and SIGUSR1 set
    ``stop.signum`` instead of killing the process; see the module docstring."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.interrupt_evaluation = False  # set while a one-process evaluation may be abandoned
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._received)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _received(self, signum: int, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: now
        self.signum = self.signum or signum
        if self.interrupt_evaluation:
            self.interrupt_evaluation = False
            raise EvaluationInterrupted

    def agreed(self, accelerator) -> int | None:
        """The signal every process stops on, or None: with several processes they decide together
        after each step (each may have seen the signal during a different step)."""
        if accelerator.num_processes == 1:
            return self.signum
        flag = torch.tensor([float(self.signum or 0)], device=accelerator.device)
        agreed = int(accelerator.reduce(flag, "max").item())
        if agreed and self.signum is None:
            self.signum = agreed
        return agreed or None


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of data-loading workers: the training process decides when to stop; a
    worker that died of Ctrl-C first would print its own traceback and break the step in progress
    (workers end with the process that started them: see :func:`_end_workers`)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@atexit.register
def _end_workers() -> None:
    """End the daemonic children (data-loading workers) still alive when the process exits.

    multiprocessing ends them at exit with SIGTERM and then waits for them; a worker that ignores
    SIGTERM (above) would make that wait last forever, e.g. after an error raised while a loader's
    iterator was still referenced by the traceback. So: SIGTERM, a second to go, then SIGKILL.
    """
    workers = [child for child in multiprocessing.active_children() if child.daemon]
    if workers and hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread():
        # torch's SIGCHLD handler would report each ended worker as a failure of the run
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(timeout=1)
        if worker.is_alive():
            worker.kill()
            worker.join()


class RunLock:
    """An exclusive lock on ``run_dir/.lock`` held while a process trains into the folder; a second
    process (two ``--resume`` of one run) is refused with a message naming the holder. The lock is
    the operating system's (``flock``): it goes with the process, however the process ends."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self._handle = None

    def acquire(self) -> None:
        import fcntl

        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ValueError(f"{self.path.parent} is in use: {holder} is training into it; wait for it to end "
                             "(or stop it) before resuming this run") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None
