"""The runs of a comparison trained at the same time on a CPU, one process each (``--side-by-side``).

A small training step leaves a second core mostly idle: on two cores a step of the main SR job
is only 1.1-1.3x faster than on one, so two runs trained at once, one core each, end sooner than
one after the other on both cores. Each run is a child process with its share of the cores and
the same options as in a sequential run, so it trains exactly as it would alone on that many
threads; the parent waits and then compares, as after sequential runs.

Stopping keeps its guarantees: the children sit in process groups of their own, and the parent
forwards each stop signal (SIGTERM, SIGUSR1, Ctrl-C) once to every child, which finishes its step,
saves and exits as a single run does; the command then exits with the same code. An error in one
run is reported as a single run reports it, once the others have ended (their work is kept).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import traceback
from multiprocessing.connection import wait
from typing import Callable

import torch

from tasks.common.cli import EXPECTED_ERRORS, user_message
from tasks.common.distributed import launcher_set_one_thread
from tasks.common.stopping import RunInterrupted, StopSignals
from tasks.utils import progress
from tasks.utils.processes import cores, world_size


def side_by_side_possible(runs: int) -> bool:
    """Several runs, one process (not ``accelerate launch`` with several), no GPU, a core per run."""
    return 1 < runs <= cores() and world_size() == 1 and not torch.cuda.is_available()


def train_side_by_side(train: Callable[[argparse.Namespace], dict], runs: list[argparse.Namespace],
                       labels: list[str]) -> list[dict]:
    """``[train(args) for args in runs]``, each in a child process with an equal share of the cores
    (or the OMP_NUM_THREADS the user set); ``train`` must be picklable (a module-level function or
    a ``partial`` of one)."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state copied from this one
    threads = _threads_per_run(len(runs))
    children, pending, results = [], {}, {}
    with _Forwarding(children):  # installed first, so that no signal reaches a run unforwarded
        for index, (args, label) in enumerate(zip(runs, labels)):
            receiver, sender = context.Pipe(duplex=False)
            children.append(context.Process(target=_child, args=(train, args, label, threads, index, sender),
                                            name=label))
            children[-1].start()
            sender.close()  # the child holds the sending end now: its exit ends the pipe
            pending[receiver] = index
        while pending:
            for receiver in wait(list(pending)):
                index = pending.pop(receiver)
                results[index] = _answer(receiver, children[index])
        for child in children:
            child.join()
    return _summaries([results[index] for index in range(len(runs))], labels)


def _answer(receiver, child) -> tuple:
    try:
        return receiver.recv()
    except EOFError:  # killed (out of memory, say) before it could answer
        child.join()
        return "error", f"its process ended without a result (exit code {child.exitcode}; killed?)"


def _threads_per_run(runs: int) -> int:
    """An OMP_NUM_THREADS the user set (not `accelerate launch`'s default of 1) holds for each run;
    otherwise the cores are shared out."""
    if "OMP_NUM_THREADS" in os.environ and not launcher_set_one_thread():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, cores() // runs)


def _child(train, args, label: str, threads: int, position: int, sender) -> None:
    os.setpgrp()  # a terminal's Ctrl-C reaches the parent alone, which forwards it once
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # DataLoader workers and anything started later
    args.run_label = label
    progress.POSITION = position  # one bar per run, stacked
    try:
        answer: tuple = ("done", train(args))
    except RunInterrupted as stop:
        answer = ("stopped", str(stop), stop.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        answer = ("interrupted",)
    except EXPECTED_ERRORS as error:
        answer = ("error", user_message(error))
    except BaseException:  # a bug: its traceback, for the parent to show
        answer = ("crash", traceback.format_exc())
    sender.send(answer)
    sender.close()


def _summaries(results: list[tuple], labels: list[str]) -> list[dict]:
    """The runs' summaries, or the first failure raised as a single run would raise it."""
    for kind in ("crash", "error", "interrupted", "stopped"):
        failed = [(label, result) for label, result in zip(labels, results) if result[0] == kind]
        if not failed:
            continue
        label, result = failed[0]
        if kind == "crash":
            raise RuntimeError(f"the {label} run failed: {result[1]}")
        if kind == "error":
            raise ValueError(f"{label}: {result[1]}")
        if kind == "interrupted":
            raise KeyboardInterrupt
        lines = dict.fromkeys(stop[1] for _, stop in failed)  # one line per run, the same once
        raise RunInterrupted(result[2] - 128, "\n".join(lines))
    return [result[1] for result in results]


class _Forwarding(StopSignals):
    """While installed, a stop signal the parent receives goes once to every child still running
    (installed and given back as :class:`StopSignals` is; only what a signal does differs)."""

    def __init__(self, children: list) -> None:
        super().__init__()
        self.children = children

    def _received(self, signum: int, frame) -> None:
        for child in self.children:
            if child.is_alive():
                os.kill(child.pid, signum)
