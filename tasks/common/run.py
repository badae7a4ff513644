"""The run skeleton every training command shares.

A task supplies only what is its own, as a :class:`Task`: its options, its data, its network,
its optimiser, its loss, its evaluation (with the pictures it makes) and its final report. The
skeleton does the rest the same way for every task: the Accelerator, the seeded training loader,
the run folder, the W&B tracker, the trainer, and, when ``--attention`` names several modules
(``--attention none bam``), one run per module with the same seed, data order, steps and
evaluation, in one experiment group, followed by their comparison.

    accelerate launch launch/sr.py --attention none bam      # baseline and BAM, then the comparison
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bam import attention_class, list_attentions
from tasks.common.checkpoint import checkpoint_bytes
from tasks.common.cli import add_run_args, run_cli, run_dir_for
from tasks.common.distributed import decided_on_main_process, make_accelerator
from tasks.common.model_io import ModelDescription
from tasks.common.tracking import Tracker
from tasks.common.ema import WeightAverage, averaged_step
from tasks.common.side_by_side import side_by_side_possible, train_side_by_side
from tasks.common.stopping import ignore_stop_signals
from tasks.common.trainer import EvaluateFn, StepFn, TrainConfig, Trainer, loss_step
from tasks.data.sampling import EpochSeededSampler
from tasks.utils.files import check_writable
from tasks.utils.messages import note_once
from tasks.utils.processes import is_main_process


@dataclass
class Schedule:
    """How long a run trains and how often it evaluates (in optimizer steps)."""

    max_steps: int
    eval_every: int
    grad_clip: float | None = None


@dataclass
class RunInfo:
    """What a run is, for its folder, its record and W&B: ``config`` holds the task's own fields
    (``arch``, ``attention``, ``dataset``, options, counts); ``summary_extra`` adds summary fields."""

    name: str
    group: str
    config: dict[str, Any]
    description: ModelDescription
    tags: Sequence[str] = ()
    summary_extra: dict[str, Any] = field(default_factory=dict)
    primary_metric: str | None = None  # overrides the task's (SR: the PSNR of the first set)


class Task:
    """One task's own pieces; subclasses override what they have (see the module docstring).

    Class attributes: ``name`` (``"sr"``), ``prog`` and ``description`` (for ``--help``),
    ``attentions`` (the ``--attention`` choices), ``run_defaults``
    (defaults of the shared run options), ``primary_metric`` and ``primary_mode`` (which
    evaluation is kept as ``best``), ``fixed_shapes`` (batches of one shape: cuDNN may benchmark).
    """

    name = "task"
    title = "Task"  # how comparison titles name it
    prog: str | None = None
    description = ""
    attentions: Sequence[str] = ("none", "bam")
    run_defaults: dict[str, Any] = {}
    primary_metric = "loss"
    primary_mode = "min"
    fixed_shapes = True

    # -- options --------------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The task's own options (``--attention`` and the shared run options are added for it)."""

    def parse_args(self, argv: Sequence[str] | None) -> argparse.Namespace:
        return self.build_parser().parse_args(argv)

    def build_parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        self.add_arguments(parser)
        # One run per value (same seed, data order and evaluation, one experiment group), then their
        # comparison; every training command's default: the baseline, then BAM.
        parser.add_argument("--attention", nargs="+", default=["none", "bam"], metavar="NAME",
                            help=f"one of {', '.join(self.attentions)} (default: none bam); "
                                 "several values train one run each and compare them, e.g. "
                                 "--attention none bam")
        add_run_args(parser, {"output_dir": f"runs/{self.name}", **self.run_defaults})
        return parser

    def check(self, args: argparse.Namespace) -> None:
        """Refuse bad option values with a ValueError naming the option (one run's options)."""
        if args.attention not in self.attentions:
            raise ValueError(f"unknown attention {args.attention!r} (--attention); valid names: "
                             f"{', '.join(self.attentions)}")
        if self.fixed_shapes:
            return
        if args.compile == "reduce-overhead":  # one CUDA graph (and its memory) per shape: refuse
            raise ValueError(f"--compile reduce-overhead records one CUDA graph per input shape, "
                             f"and {self.name} batches change shape from step to step: use "
                             "--compile default (or off)")
        if args.compile == "default":
            note_once(f"--compile default with {self.name}'s varying input shapes: the first "
                      "steps recompile for new shapes until Dynamo switches to shape-generic "
                      "graphs; expect slow early steps")

    # -- the pieces of one run -----------------------------------------------------------------
    def data(self, args: argparse.Namespace, accelerator) -> Any:
        """Whatever the task reads (training set, evaluation sets...); the main process runs this
        first (downloads, caches), the others after it."""
        raise NotImplementedError

    def collate(self, data: Any) -> Callable | None:
        return None

    def batch_size(self, args: argparse.Namespace, num_processes: int) -> int:
        """Per-process training batch: ``--batch-size`` is the global batch, split over the processes."""
        return per_process_batch(args.batch_size, num_processes)

    def batch_statistics_span_processes(self, accelerator) -> bool:
        """True when BatchNorm takes its statistics over every process's batch (SyncBN)."""
        return False

    def schedule(self, args: argparse.Namespace, data: Any, steps_per_epoch: int) -> Schedule:
        """Steps and evaluations; ``steps_per_epoch`` counts whole global batches."""
        return Schedule(args.max_steps, args.eval_every, getattr(args, "grad_clip", None))

    def model(self, args: argparse.Namespace, data: Any) -> nn.Module:
        raise NotImplementedError

    def optimizer(self, args: argparse.Namespace, model: nn.Module, data: Any, schedule: Schedule):
        """``(optimizer, scheduler or None)``."""
        raise NotImplementedError

    def loss(self, args: argparse.Namespace) -> Callable:
        """``loss(model, batch) -> loss`` or ``(loss, {name: float})``."""
        raise NotImplementedError

    def training_step(self, args: argparse.Namespace) -> StepFn:
        """``step(run, batch) -> {name: value}``: one optimizer step (see
        :class:`tasks.common.trainer.TrainingStep`). The default is forward, :meth:`loss`, backward
        and one optimiser update; a task with a second loss term, network or optimiser overrides it."""
        return loss_step(self.loss(args))

    def describe(self, args: argparse.Namespace, data: Any, model: nn.Module, schedule: Schedule) -> RunInfo:
        raise NotImplementedError

    def evaluator(self, args: argparse.Namespace, data: Any, run_dir: Path, tracker: Tracker) -> EvaluateFn:
        """``evaluate(model, accelerator, step) -> {metric: value}``, pictures included."""
        raise NotImplementedError

    def report(self, args: argparse.Namespace, run_dir: Path, summary: dict) -> None:
        """Main process, after training: write and print the task's result table."""


def training_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int, collate=None) -> DataLoader:
    """The training loader of every task: an epoch order that is a function of (seed, epoch), per-
    sample augmentation seeds, whole batches only."""
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochSeededSampler(len(dataset), seed=seed),
                      num_workers=num_workers, collate_fn=collate, drop_last=True, worker_init_fn=ignore_stop_signals,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)


def per_process_batch(global_batch: int, num_processes: int) -> int:
    """``--batch-size`` means the global batch in every task (a recipe's batch holds on any number of
    processes); each process takes an equal share."""
    if global_batch % num_processes:
        raise ValueError(f"--batch-size {global_batch} does not split evenly over {num_processes} processes; "
                         "pick a --batch-size divisible by the number of processes")
    return global_batch // num_processes


def steps_per_epoch(num_items: int, global_batch: int) -> int:
    """Whole global batches in one epoch (the last partial batch is dropped)."""
    if num_items < global_batch:
        raise ValueError(f"the training set has {num_items} items, fewer than one batch of {global_batch} "
                         "(--batch-size); lower --batch-size")
    return num_items // global_batch


def train(task: Task, args: argparse.Namespace) -> dict:
    """Train and evaluate one run of ``task`` (one ``--attention`` value); returns its summary."""
    task.check(args)
    accelerator = make_accelerator(args.mixed_precision, fixed_shapes=task.fixed_shapes)
    if args.resume in (False, True, None) or args.run_name:  # the run goes under --output-dir
        # Before the data loads: a read-only folder is found in a second, not at the first save.
        decided_on_main_process(lambda: check_writable(args.output_dir, "--output-dir"), accelerator)
    batch = task.batch_size(args, accelerator.num_processes)
    if batch < 2 and args.attention != "none" and not task.batch_statistics_span_processes(accelerator):
        raise ValueError(f"--batch-size {args.batch_size} over {accelerator.num_processes} process(es) gives "
                         f"{batch} sample per process: the attention's BatchNorm needs at least 2 in training")
    with accelerator.main_process_first():  # one process downloads/decodes/caches, the others wait
        data = task.data(args, accelerator)
    # data.train: the training set, its items keyed by (index, sample_seed)
    loader = training_loader(data.train, batch, args.seed, args.num_workers, task.collate(data))
    schedule = task.schedule(args, data, steps_per_epoch(len(loader.dataset), batch * accelerator.num_processes))
    set_seed(args.seed)  # the initial weights depend on the seed only (the same on every process)
    model = task.model(args, data)
    _check_holds_attention(model, args.attention)
    optimizer, scheduler = task.optimizer(args, model, data, schedule)
    info = task.describe(args, data, model, schedule)
    step_fn, average = task.training_step(args), None
    if args.ema is not None:  # made beside the network on its device; evaluated and exported instead of it
        average = WeightAverage(model.to(accelerator.device), args.ema)
        step_fn = averaged_step(step_fn, task.loss(args), average)
    run_dir = run_dir_for(args, info.name)
    decided_on_main_process(lambda: check_writable(run_dir, "the run folder", checkpoint_bytes(model),
                                                   "a checkpoint (the new one is written beside the last)"),
                            accelerator)
    group = args.group or info.group
    config = {"task": task.name, **info.config, "group": group, "batch_size": args.batch_size,
              "batch_size_per_process": batch, "ema": args.ema}
    tracker = Tracker(run_dir, config, project=args.wandb_project, group=group, tags=[*info.tags, *(args.tags or [])],
                      mode=args.wandb, task=task.name, name=run_dir.name)
    settings = TrainConfig(max_steps=schedule.max_steps, eval_every=schedule.eval_every, log_every=args.log_every,
                           best_metric=info.primary_metric or task.primary_metric, best_mode=task.primary_mode,
                           seed=args.seed, resume=args.resume, grad_clip=schedule.grad_clip,
                           channels_last=args.channels_last, compile=args.compile, task=task.name,
                           label=getattr(args, "run_label", ""))
    trainer = Trainer(model, optimizer, loader, step_fn, settings, run_dir,
                      evaluate_fn=task.evaluator(args, data, run_dir, tracker), scheduler=scheduler,
                      tracker=tracker, accelerator=accelerator, config=config, description=info.description,
                      summary_extra=info.summary_extra,
                      state={"ema": average.module} if average else None,
                      evaluated=(lambda: average.module) if average else None)
    summary = trainer.fit()
    summary["run_dir"] = str(run_dir)
    if accelerator.is_main_process:
        task.report(args, run_dir, summary)
    return summary


def _check_holds_attention(model: nn.Module, attention: str) -> None:
    """A run named after a module must contain it: otherwise a comparison would set two identical
    networks against each other."""
    if attention not in list_attentions():
        return  # "none", or a variant that is not a module (classification's extra-block)
    kind = attention_class(attention)
    if not any(isinstance(module, kind) for module in model.modules()):
        raise ValueError(f"--attention {attention}: the network built from these options holds no {attention} "
                         "module (are there fewer blocks than --attention-interval?)")


def train_all(task: Task, args: argparse.Namespace, compare: Callable | None = None) -> list[dict]:
    """One run per ``--attention`` value; with several, one shared group and ``compare`` of
    their folders (main process): ``compare(run_dirs, output_dir, group, title, task=...,
    wandb_project=..., wandb_mode=...)``, the report every task writes (:mod:`tasks.report`)."""
    attentions = list(dict.fromkeys(args.attention))  # "none none" is one run
    paired = len(attentions) > 1
    if paired and args.resume not in (False, True, None):
        raise ValueError("--resume PATH names one run; with several --attention values use --resume alone "
                         "(each run continues from its own folder)")
    name = args.run_name  # with several modules, one folder each: --run-name N gives N-none, N-bam
    runs = [argparse.Namespace(**{**vars(args), "attention": attention,
                                  "run_name": f"{name}-{attention}" if paired and name else name})
            for attention in attentions]
    for single in runs:  # every run's options are checked before the first one trains
        task.check(single)
    if args.side_by_side and side_by_side_possible(len(runs)):
        summaries = train_side_by_side(partial(train, task), runs, [f"{task.name} {a}" for a in attentions])
    else:
        summaries = [train(task, single) for single in runs]
    if paired and compare is not None and is_main_process():
        group = summaries[0].get("group") or ""
        compare([Path(s["run_dir"]) for s in summaries], args.output_dir, group,
                f"{task.title}: baseline vs attention — {group}", task=task.name,
                wandb_project=args.wandb_project, wandb_mode=args.wandb)
    return summaries


def main(task: Task, argv: Sequence[str] | None = None, compare: Callable | None = None) -> list[dict]:
    """The command line of ``task``: parse, train every run (and compare them), turn bad input
    and stop signals into one line."""
    return run_cli(lambda: train_all(task, task.parse_args(argv), compare))
