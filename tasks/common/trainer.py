"""The training loop every task shares, on top of Hugging Face Accelerate.

The loop owns what is the same for every task: steps and epochs, evaluation and checkpoint
cadence, ``last`` and ``best`` checkpoints (written atomically, see :mod:`tasks.common.checkpoint`),
exact resume, logging, stopping on a signal (:mod:`tasks.common.stopping`) and the summary. The
training step itself belongs to the task: ``step_fn(step, batch)`` gets a :class:`TrainingStep`
(the network to call, ``backward``, ``update``) and returns what to log, so a task that adds a
second loss term, a second network or an average of the weights does it in its own step.
:func:`loss_step` makes the usual step (forward, loss, backward, one optimiser) from a loss.

The loop counts optimizer steps (``max_steps``); epochs follow from the length of the prepared
loader. On the CPU a resumed run reaches bit-identical weights to an uninterrupted one because

* the RNG states are part of the checkpoint (``accelerator.save_state``);
* data loading runs on its own RNG stream and evaluation under a forked RNG, so neither consumes
  the training RNG (:mod:`tasks.common.rng`);
* the data order is a pure function of ``(seed, epoch)`` (``EpochSeededSampler``, or the seedable
  sampler Accelerate substitutes for a shuffling loader) and a resumed epoch skips the batches
  already seen; per-sample augmentation should use the sampler's ``sample_seed``.

With several processes, every process holds rank 0's BatchNorm statistics before each evaluation
and save, so the scores logged during training are the scores of the checkpoint saved.

``compile`` (``--compile``) compiles what the training steps call and nothing else: evaluation,
checkpoints and resume use the network itself, eager (see :mod:`tasks.common.compile`).
"""

from __future__ import annotations

import math
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file

from tasks.common.checkpoint import (find_damaged_file, find_resume_checkpoint, read_trainer_state,
                                     repair_best, save_checkpoint)
from tasks.common.compile import begin_step, compile_for_training
from tasks.common.distributed import decided_on_main_process, make_accelerator, sync_buffers
from tasks.common.model_io import ModelDescription, save_model
from tasks.common.nonfinite import NonFiniteLossError, check_losses, check_weights
from tasks.common.per_sample import PER_SAMPLE_KEY, save_per_sample
from tasks.common.resume import apply_requested_settings, check_unchanged, describe_changes, optimizer_settings
from tasks.common.rng import DataRNG, rng_fork, seed_loader_generator, set_epoch
from tasks.common.stopping import EvaluationInterrupted, RunInterrupted, RunLock, StopSignals
from tasks.common.summary import build_summary, environment_info, write_summary
from tasks.common.tracking import Tracker
from tasks.utils.files import write_json_atomic
from tasks.utils.messages import note, warn
from tasks.utils.progress import progress

EvaluateFn = Callable[[torch.nn.Module, Accelerator, int], Mapping[str, Any]]
StepFn = Callable[["TrainingStep", Any], Mapping[str, Any]]


@dataclass(frozen=True)
class TrainConfig:
    """How long to train and when to evaluate, save and log; what to keep as ``best``.

    ``eval_every=0``: evaluate (and save) only at the end.
    ``resume``: False, True (``run_dir/checkpoints/last`` if present) or a checkpoint/run path.
    """

    max_steps: int
    eval_every: int = 1000
    log_every: int = 50
    best_metric: str | None = None
    best_mode: str = "max"
    seed: int = 0
    resume: bool | str = False
    grad_clip: float | None = None
    channels_last: bool = False
    compile: str = "off"
    progress: bool = True
    task: str = ""
    label: str = ""  # names the progress bar and the evaluation lines of a run trained beside another

    def __post_init__(self) -> None:
        # The other settings come from options that argparse checks; --grad-clip is a plain float.
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"--grad-clip must be positive, got {self.grad_clip}")


class TrainingStep:
    """What a task's training step works with (one object per run, handed to every step).

    ``model`` is the network to call (the compiled wrapper under ``--compile``; under CUDA graphs
    a replay overwrites the previous step's outputs: keep numbers, not output tensors, across
    steps); ``network`` the network itself (weights, for an average of them); ``step`` the number
    of the step being taken (1-based). :meth:`backward` and :meth:`update` do what every step
    needs done the same way: the non-finite checks, mixed-precision scaling, gradient clipping.
    """

    def __init__(self, trainer: "Trainer") -> None:
        self._trainer = trainer
        self.accelerator = trainer.accelerator
        self.optimizer, self.scheduler = trainer.optimizer, trainer.scheduler
        self.model = trainer._train_model
        self.network = trainer.accelerator.unwrap_model(trainer.model)
        self.step = 0
        self.losses: list[float] = []  # this step's losses, each the mean over processes

    def backward(self, loss: torch.Tensor) -> None:
        """Check ``loss`` is finite on every process (else stop, keeping the last good checkpoint)
        and back-propagate it."""
        acc, settings = self.accelerator, self._trainer.settings
        losses = acc.gather(loss.detach().float().reshape(1))
        check_losses(losses, self.step, self._trainer.run_dir, acc.mixed_precision, settings.grad_clip)
        acc.backward(loss)
        self.losses.append(float(losses.mean()))

    def update(self, optimizer: torch.optim.Optimizer | None = None, scheduler=None) -> dict[str, float]:
        """Clip the gradients (``--grad-clip``), step the optimiser and its scheduler, clear the
        gradients; returns ``{"grad_norm": ...}`` when clipping."""
        acc, settings = self.accelerator, self._trainer.settings
        optimizer = optimizer or self.optimizer
        scheduler = scheduler if optimizer is not self.optimizer else self.scheduler
        logs = {}
        if settings.grad_clip is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            logs["grad_norm"] = float(acc.clip_grad_norm_(params, settings.grad_clip))
            # fp16's loss scaler skips such steps by itself; otherwise they would poison the weights.
            if acc.mixed_precision != "fp16":
                check_losses(torch.tensor([logs["grad_norm"]]), self.step, self._trainer.run_dir,
                             acc.mixed_precision, settings.grad_clip, what="gradient norm")
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return logs


def loss_step(loss_fn: Callable) -> StepFn:
    """The usual training step from ``loss_fn(model, batch) -> loss or (loss, {name: value})``:
    forward and loss, backward, one optimiser update."""

    def step(run: TrainingStep, batch) -> dict[str, Any]:
        output = loss_fn(run.model, batch)
        loss, logs = output if isinstance(output, tuple) else (output, {})
        run.backward(loss)
        return {**logs, **run.update()}

    return step


def _plain(value: Any) -> Any:
    """A metric as JSON: numbers become floats; tensors/arrays/sequences (per-class values) lists."""
    if hasattr(value, "tolist"):  # tensors and numpy values
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str) or value is None:
        return value
    return float(value)


class Trainer:
    """Train ``model`` for ``settings.max_steps`` optimizer steps; see the module docstring.

    ``step_fn(step, batch)`` takes one optimizer step (see :class:`TrainingStep`, :func:`loss_step`)
    and returns ``{name: number}`` to log. ``evaluate_fn(model, accelerator, step)`` returns
    ``{metric: value}`` already reduced over the processes (shard its loader with
    ``tasks.common.distributed.prepare_eval_loader`` and use ``accelerator.gather_for_metrics``);
    it gets the evaluated network in eval mode under ``torch.no_grad``. Non-scalar values
    (per-class lists...) reach the summary's final/best but not the history; a ``"per_sample"``
    entry (``{name: array}``, see :mod:`tasks.common.per_sample`) is stored with the checkpoint of
    the weights it scored and, for the final evaluation, beside the summary.

    ``state`` names more objects a step keeps (an average of the weights, a second network...):
    each has ``state_dict()``/``load_state_dict()`` of tensors, is saved in every checkpoint as
    ``<name>.safetensors`` and restored on resume. ``evaluated`` returns the network that is
    evaluated, chosen as ``best`` and exported (default: the trained one). ``config`` is the run's
    record (``config.json``, W&B config, summary; a resumed run may not change it, see
    :mod:`tasks.common.resume`); ``description`` says how to rebuild the network: every
    checkpoint then holds ``network.safetensors`` + ``network.json`` for the evaluation tools.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_loader, step_fn: StepFn,
                 settings: TrainConfig, run_dir, *, evaluate_fn: EvaluateFn | None = None, scheduler=None,
                 tracker: Tracker | None = None, accelerator: Accelerator | None = None,
                 config: Mapping[str, Any] | None = None, description: ModelDescription | None = None,
                 summary_extra: Mapping[str, Any] | None = None, state: Mapping[str, Any] | None = None,
                 evaluated: Callable[[], torch.nn.Module] | None = None) -> None:
        self.settings = settings
        self.accelerator = accelerator or make_accelerator("no")
        self.model, self.optimizer, self.train_loader, self.scheduler = model, optimizer, train_loader, scheduler
        self.step_fn, self.evaluate_fn = step_fn, evaluate_fn
        self.state, self._evaluated = dict(state or {}), evaluated
        self.run_dir = Path(run_dir)
        self.description, self.summary_extra = description, dict(summary_extra or {})
        self.config = dict(config or {})
        recorded = {k: v for k, v in asdict(settings).items() if k not in ("progress", "resume", "label")}
        for key, value in {**recorded, "mixed_precision": self.accelerator.mixed_precision,
                           "num_processes": self.accelerator.num_processes}.items():
            self.config.setdefault(key, value)
        self.tracker = tracker or Tracker(self.run_dir, self.config, mode="disabled", task=settings.task)
        for key, value in self.config.items():  # the trainer's settings reach W&B's config too
            self.tracker.config.setdefault(key, value)
        # Training state (restored on resume).
        self.step = 0
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best: dict[str, Any] = {}
        self.final: dict[str, Any] = {}
        self.last_eval_step: int | None = None
        self.previous_wall_time = 0.0
        self._started = False  # set up: the run's record is its own from here on
        self._improved = False  # the latest evaluation is the best yet: save() links it as best
        self._lr = float("nan")
        self._per_sample: Mapping[str, Any] | None = None  # of the latest evaluation
        self.optimizer_changes: list[dict[str, Any]] = []  # optimiser settings changed on --resume, by step
        self.resume_changes: list[dict[str, Any]] = []  # other settings changed on --resume, by step
        self._stop = StopSignals()
        self._lock = RunLock(self.run_dir)

    def evaluated_network(self) -> torch.nn.Module:
        """The network that is evaluated, kept as ``best`` and exported."""
        return self._evaluated() if self._evaluated else self.accelerator.unwrap_model(self.model)

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        acc, settings = self.accelerator, self.settings
        self._segment_start = time.perf_counter()
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        decided_on_main_process(self._lock.acquire, acc)  # before anything in the folder is read
        # The same seed on every process while preparing: Accelerate's seedable sampler takes its
        # seed from torch here, and all processes must shuffle alike to split one permutation.
        set_seed(settings.seed)
        if settings.channels_last:  # NHWC weights make convolutions pick NHWC kernels (tensor cores)
            self.model.to(memory_format=torch.channels_last)
            # and the evaluated copy (an average of the weights): the same kernels, the same statistics
            self.evaluated_network().to(memory_format=torch.channels_last)
        self.model, self.optimizer, self.train_loader, self.scheduler = acc.prepare(
            self.model, self.optimizer, self.train_loader, self.scheduler)  # None stays None
        # Under --mixed-precision, prepare() wraps the network's forward in autocast. The training
        # step runs inside acc.autocast() anyway; without the wrapper, evaluation and the saved
        # network compute in float32, so mixed precision never changes a reported metric.
        acc.unwrap_model(self.model, keep_fp32_wrapper=False)
        self._train_model = compile_for_training(self.model, settings.compile, acc.device)
        set_seed(settings.seed, device_specific=True)  # then different dropout masks per process
        self._data_rng = DataRNG(settings.seed, acc.process_index)
        self.steps_per_epoch = len(self.train_loader)  # >= 1: run.steps_per_epoch checks that

        checkpoint = decided_on_main_process(self._find_checkpoint, acc)
        state: dict[str, Any] = {}
        if checkpoint is not None:
            state = read_trainer_state(checkpoint)
            self._check_resumable(state, checkpoint)
            requested = optimizer_settings(self.optimizer)  # what this run's options ask for
            self._load(checkpoint)
            self._restore(state, checkpoint)
            self._take_requested_settings(requested, checkpoint)
            if acc.is_main_process:
                repair_best(self.run_dir, checkpoint, self.best_step)
        for key in ("optimizer_changes", "resume_changes"):  # the record says from which step each setting held
            if getattr(self, key):
                self.config[key] = self.tracker.config[key] = getattr(self, key)
        self.environment = environment_info()
        if acc.is_main_process:
            write_json_atomic(self.run_dir / "config.json", self.config)
            self.tracker.start(run_id=state.get("tracker_run_id"))
            self.tracker.truncate_history(self.step if checkpoint is not None else -1)
            self.tracker.update_summary({"params": self._count_params()})
        self._started = True

    def _find_checkpoint(self) -> Path | None:
        # May finish an interrupted checkpoint swap: one process only (decided_on_main_process).
        path = find_resume_checkpoint(self.run_dir, self.settings.resume)
        if self.settings.resume and path is None:
            note(f"no checkpoint in {self.run_dir / 'checkpoints'}; starting from step 0")
        return path

    def _check_resumable(self, state: Mapping[str, Any], checkpoint: Path) -> None:
        """Refuse options that would make the resumed run another run; record the others."""
        saved = state.get("config")
        changed = check_unchanged(saved, self.config, checkpoint) if saved else {}
        self.resume_changes = list(state.get("resume_changes") or [])
        if changed:
            self.resume_changes.append({"step": int(state["step"]), "changed": changed})
            note(f"--resume: {describe_changes(changed)} from step {state['step']} on (recorded in config.json as "
                 "resume_changes)")

    def _load(self, checkpoint: Path) -> None:
        damaged = find_damaged_file(checkpoint)
        if damaged is not None:  # a torn file is not a settings mismatch: say which file it is
            path, problem = damaged
            raise ValueError(f"--resume: {path} is damaged ({problem}), so {checkpoint} cannot be resumed; "
                             "give --resume another checkpoint of the run (e.g. checkpoints/best) or a good copy")
        try:
            self.accelerator.load_state(str(checkpoint))
            for name, holder in self.state.items():
                holder.load_state_dict(load_file(str(checkpoint / f"{name}.safetensors")))
        except (RuntimeError, ValueError, KeyError, FileNotFoundError) as error:  # another network or file set
            detail = " ".join(str(error).split())[:500]
            raise ValueError(f"--resume: {checkpoint} does not fit this run's model, optimizer or "
                             f"scheduler (was it written with other settings?): {detail}") from None
        data_rng = checkpoint / f"data_rng_{self.accelerator.process_index}.pt"
        if data_rng.is_file():
            self._data_rng.load(data_rng)

    def _restore(self, state: Mapping[str, Any], checkpoint: Path) -> None:
        self.step = int(state["step"])
        self.best_value, self.best_step = state.get("best_value"), state.get("best_step")
        self.best, self.final = dict(state.get("best") or {}), dict(state.get("final") or {})
        self.last_eval_step = state.get("last_eval_step")
        self.previous_wall_time = float(state.get("wall_time_s") or 0.0)
        self.optimizer_changes = list(state.get("optimizer_changes") or [])
        if not self.accelerator.is_main_process:
            return
        print(f"resumed from {checkpoint} at step {self.step}", flush=True)
        saved_epoch_length = state.get("steps_per_epoch")
        if saved_epoch_length not in (None, self.steps_per_epoch):
            warn(f"the checkpoint had {saved_epoch_length} optimizer steps per epoch, now "
                 f"{self.steps_per_epoch} (the training set changed size): the data order will differ "
                 "from the original run")
        saved_max_steps = state.get("max_steps")
        if self.scheduler is not None and saved_max_steps not in (None, self.settings.max_steps):
            warn(f"the checkpoint was written by a run of {saved_max_steps} steps, this one "
                 f"has {self.settings.max_steps}: the learning-rate schedule restored from it keeps its "
                 "original length")

    def _take_requested_settings(self, requested: list[dict[str, Any]], checkpoint: Path) -> None:
        """Optimiser options that differ from the checkpoint's apply from this step on (and are
        recorded), or stop the run when its schedule cannot take them (ValueError saying how)."""
        scheduler = getattr(self.scheduler, "scheduler", self.scheduler)  # Accelerate wraps it
        changed = apply_requested_settings(self.optimizer, scheduler, requested, checkpoint)
        if not changed:
            return
        self.optimizer_changes.append({"step": self.step, "changed": changed})
        note(f"--resume with other optimiser settings than {checkpoint}: {describe_changes(changed)} from step "
             f"{self.step} on (recorded in config.json as optimizer_changes)")

    def _count_params(self) -> int:
        return sum(p.numel() for p in self.evaluated_network().parameters())

    # -- main loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``max_steps`` (evaluating and checkpointing on the way); return the summary.

        A stop signal ends the run after a save with :class:`RunInterrupted` (see
        :mod:`tasks.common.stopping`)."""
        with self._stop:
            try:
                self._setup()
                stopped = self._train()
                if stopped is not None:
                    raise self._interrupted(stopped)
            except RunInterrupted:
                raise
            except (Exception, KeyboardInterrupt) as error:
                status = ("interrupted" if isinstance(error, KeyboardInterrupt) else
                          "failed: non-finite loss" if isinstance(error, NonFiniteLossError) else
                          f"failed: {type(error).__name__}")
                if self._started:  # a run refused while setting up leaves the folder as it was
                    try:
                        self._finish(status, exit_code=1)
                    except OSError as write_error:  # a full disk: say so, do not hide the failure
                        warn(f"could not record the failed run's summary in {self.run_dir} "
                             f"({write_error})")
                raise
            finally:
                self._lock.release()
        return self._finish("completed")

    def _interrupted(self, signum: int) -> RunInterrupted:
        name = signal.Signals(signum).name
        self._finish(f"interrupted by {name}", exit_code=128 + signum)
        return RunInterrupted(signum, f"stopped by {name} at step {self.step} of {self.settings.max_steps}, saved in "
                                      f"{self.run_dir / 'checkpoints' / 'last'}: run the same command with "
                                      "--resume to continue")

    def _train(self) -> int | None:
        """Train to ``max_steps``; the signal it stopped on, if one came."""
        acc, settings = self.accelerator, self.settings
        self.model.train()
        step = TrainingStep(self)
        if self.step and self.last_eval_step != self.step and self._due(settings.eval_every):
            stopped = self._evaluate_and_save(None)  # an evaluation a signal cut short: its weights were saved
            if stopped is not None:
                return stopped
        bar = progress(total=settings.max_steps, initial=self.step, unit="step",
                       desc=settings.label or settings.task or "train",
                       main_process=acc.is_main_process and settings.progress)
        # The logged values summed since the last log line, and where and when that line was.
        sums, logged_step, logged_time = Counter(), self.step, time.perf_counter()
        try:
            while self.step < settings.max_steps:
                epoch, done = divmod(self.step, self.steps_per_epoch)
                loader = acc.skip_first_batches(self.train_loader, done) if done else self.train_loader
                set_epoch(loader, epoch)
                seed_loader_generator(loader, settings.seed + acc.process_index, epoch)
                if done == 0:  # each epoch's loading stream starts fresh; mid-epoch, the restored one goes on
                    self._data_rng.reseed(epoch)
                batches = iter(loader)
                for _ in range(self.steps_per_epoch - done):
                    sums.update(self._take_step(step, batches))  # adds the values
                    self.step += 1
                    bar.update(1)
                    last_step = self.step == settings.max_steps
                    if self.step % settings.log_every == 0 or last_step:
                        seconds = time.perf_counter() - logged_time
                        self._log_train(sums, self.step - logged_step, seconds, bar)
                        sums, logged_step, logged_time = Counter(), self.step, time.perf_counter()
                    stopped = self._stop.agreed(acc)
                    if stopped is not None:
                        self.save()
                        return stopped
                    if self._due(settings.eval_every) or last_step:
                        stopped = self._evaluate_and_save(bar)
                        if stopped is not None:
                            return stopped
                    if self.step >= settings.max_steps:
                        break
                else:
                    # Run the loader to its end so Accelerate closes the epoch cleanly instead of
                    # keeping an abandoned iterator active.
                    with self._data_rng.active():
                        for _ in batches:
                            pass
        finally:
            bar.close()
        if self.last_eval_step != self.step:  # resumed at or past max_steps: make sure final numbers exist
            return self._evaluate_and_save(None)
        return None

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _take_step(self, step: TrainingStep, batches) -> dict[str, float]:
        acc = self.accelerator
        with self._data_rng.active():  # data loading never consumes the training RNG
            batch = next(batches, None)
        if batch is None:
            raise RuntimeError("the training loader yielded fewer batches than its length")
        step.step, step.losses = self.step + 1, []
        self._lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
        begin_step(self.settings.compile, acc.device)
        with acc.autocast():
            logs = {k: float(v) for k, v in (self.step_fn(step, batch) or {}).items()}
        if not step.losses:
            raise RuntimeError("the training step did not call step.backward(loss)")
        logs["loss"] = sum(step.losses)
        return logs

    def _log_train(self, sums: Mapping[str, float], steps: int, seconds: float, bar) -> None:
        """Log the means of ``sums`` over ``steps`` and the throughput; a step counts the loader's
        global batch (the tasks' loaders drop partial batches)."""
        acc = self.accelerator
        metrics = {k: v / steps for k, v in sums.items()}
        names = sorted(k for k in metrics if k != "loss")
        if acc.num_processes > 1 and names:  # the loss is already the mean over processes; the rest is local
            values = acc.reduce(torch.tensor([metrics[n] for n in names], device=acc.device), "mean")
            metrics.update(dict(zip(names, values.tolist())))
        steps_per_s = steps / max(seconds, 1e-9)
        metrics.update(lr=self._lr, steps_per_s=steps_per_s,
                       samples_per_s=steps_per_s * self.train_loader.total_batch_size)
        if acc.is_main_process:
            self.tracker.log(metrics, self.step, split="train")
            bar.set_postfix(loss=f"{metrics['loss']:.4g}", lr=f"{metrics['lr']:.3g}", refresh=False)

    # -- evaluation, checkpoints ------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Run ``evaluate_fn`` (eval mode, no grad, training RNG untouched) and return plain values."""
        if self.evaluate_fn is None:
            return {}
        network = self.evaluated_network()
        sync_buffers(network, self.accelerator)  # every process scores the statistics that are saved
        network.eval()
        self._stop.interrupt_evaluation = self.accelerator.num_processes == 1
        try:
            with rng_fork(), torch.no_grad():
                metrics = self.evaluate_fn(network, self.accelerator, self.step)
        finally:
            self._stop.interrupt_evaluation = False
            network.train()
        metrics = dict(metrics)
        self._per_sample = metrics.pop(PER_SAMPLE_KEY, None)
        return {str(k): _plain(v) for k, v in metrics.items()}

    def _record(self, metrics: dict[str, Any], bar) -> None:
        self.final, self.last_eval_step = metrics, self.step
        name = self.settings.best_metric
        if name is not None and metrics:
            if name not in metrics:
                raise ValueError(f"best_metric {name!r} is not among the evaluation metrics "
                                 f"({', '.join(metrics) or 'none'})")
            value, top = metrics[name], self.best_value
            better = top is None or (value > top if self.settings.best_mode == "max" else value < top)
            if math.isfinite(value) and better:
                self.best_value, self.best_step, self.best, self._improved = value, self.step, metrics, True
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
        if self.accelerator.is_main_process and metrics:
            self.tracker.log(scalars, self.step, split="eval")
            text = "  ".join(f"{k}={v:.4f}" for k, v in scalars.items())
            label = f"{self.settings.label}: " if self.settings.label else ""
            (bar.write if bar is not None else print)(f"{label}step {self.step}: {text}")

    def _evaluate_and_save(self, bar) -> int | None:
        """Evaluate and save. When the evaluation fails, the trained weights are saved first and
        the error re-raised with a note saying where they are (a bad evaluation file must not cost
        the training); when a signal cuts it short, they are saved and the signal returned."""
        try:
            self._record(self.evaluate(), bar)
        except EvaluationInterrupted:
            self.save()
            return self._stop.signum
        except Exception as error:
            try:
                where = f"the weights of step {self.step} are saved in {self.save()}"
            except Exception as save_error:  # noqa: BLE001 - the evaluation's error stays the one raised
                where = f"saving the weights of step {self.step} failed too ({save_error})"
            error.add_note(f"(evaluation at step {self.step} failed; {where}: fix the cause and run the same "
                           "command with --resume to evaluate them)")
            raise
        self.save()
        return self._stop.agreed(self.accelerator)  # a signal that came during the evaluation

    def _progress(self) -> dict[str, Any]:
        """What a resume restores and the summary reports."""
        settings = self.settings
        return {
            "step": self.step, "epoch": self.step // self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
            "max_steps": settings.max_steps, "seed": settings.seed, "num_processes": self.accelerator.num_processes,
            "best_metric": settings.best_metric, "best_mode": settings.best_mode, "best_value": self.best_value,
            "best_step": self.best_step, "best": self.best, "final": self.final,
            "last_eval_step": self.last_eval_step,
            "wall_time_s": self.previous_wall_time + time.perf_counter() - self._segment_start,
            "tracker_run_id": self.tracker.run_id, "optimizer_changes": self.optimizer_changes,
            "resume_changes": self.resume_changes, "config": self.config,
        }

    def save(self) -> Path:
        """Write ``checkpoints/last`` (and ``best`` after an improving evaluation) atomically.

        Weights that are no longer finite (a finite loss with an overflowing gradient, without
        ``grad_clip`` to catch it) raise :class:`NonFiniteLossError` instead of replacing the last
        good checkpoint.
        """
        acc = self.accelerator
        check_weights(acc.unwrap_model(self.model), self.step, self.run_dir, acc)
        network = self.evaluated_network()
        sync_buffers(network, acc)
        per_sample = self._per_sample if self.last_eval_step == self.step else None
        held = {name: holder.state_dict() for name, holder in self.state.items()}

        def export(folder: Path) -> None:  # main process, before the checkpoint is marked complete
            if self.description is not None:
                save_model(folder, network, self.description)  # _setup removed Accelerate's autocast wrapper
            if per_sample is not None:
                save_per_sample(folder, per_sample)
            for name, tensors in held.items():
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                          str(folder / f"{name}.safetensors"))

        data_rng = lambda folder: self._data_rng.save(folder / f"data_rng_{acc.process_index}.pt")  # noqa: E731
        best = self.run_dir / "checkpoints" / "best" if self._improved else None
        last = save_checkpoint(acc, self.run_dir / "checkpoints" / "last", self._progress(), extra=export,
                               per_process=data_rng, best=best)
        self._improved = False
        return last

    # -- summary --------------------------------------------------------------------------------
    def _finish(self, status: str, exit_code: int = 0) -> dict:
        group = self.config.get("group") or self.tracker.group
        summary = build_summary(
            task=self.settings.task, name=self.tracker.name, progress=self._progress(),
            config={"seed": self.settings.seed, **self.config, "group": group},
            params=self._count_params(), status=status, environment=self.environment,
            extra=self.summary_extra)
        if self.accelerator.is_main_process:
            if self._per_sample is not None and self.last_eval_step == self.step:  # the final evaluation's
                self.tracker.save_file(save_per_sample(self.run_dir, self._per_sample))
            write_summary(self.run_dir, summary)
            keys = ("final", "best", "best_step", "steps", "params", "macs", "wall_time_s", "status",
                    "primary_metric", "reference", "experiment")  # what a report fetched from W&B reads
            self.tracker.update_summary({k: summary[k] for k in keys if summary.get(k) is not None})
            self.tracker.finish(exit_code=exit_code)
        return summary
