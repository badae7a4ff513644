"""The training loop every task shares, on top of Hugging Face Accelerate.

The loop counts optimizer steps (``max_steps``); epochs follow from the length of the prepared
loader. It evaluates and checkpoints every ``eval_every`` steps and at the end, keeps ``last`` and
``best`` checkpoints (written atomically, see :mod:`tasks.common.checkpoint`), and resumes to the
exact step. On the CPU a resumed run reaches bit-identical weights to an uninterrupted one because

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

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from tasks.common.checkpoint import (find_damaged_file, find_resume_checkpoint, link_checkpoint, read_trainer_state,
                                     repair_best, save_checkpoint)
from tasks.common.compile import begin_step, check_mode, compile_for_training
from tasks.common.distributed import decided_on_main_process, make_accelerator, sync_buffers
from tasks.common.model_io import ModelDescription, save_model
from tasks.common.nonfinite import NonFiniteLossError, check_losses, check_weights
from tasks.common.optimizer_settings import apply_requested_settings, optimizer_settings
from tasks.common.per_sample import PER_SAMPLE_FILE, PER_SAMPLE_KEY, save_per_sample
from tasks.common.rng import DataRNG, rng_fork, seed_loader_generator, set_epoch
from tasks.common.summary import build_summary, environment_info, write_summary
from tasks.common.tracking import Tracker
from tasks.utils.files import write_json_atomic
from tasks.utils.messages import note, warn
from tasks.utils.progress import progress

__all__ = ["Trainer", "TrainConfig", "NonFiniteLossError"]

EvaluateFn = Callable[[torch.nn.Module, Accelerator, int], Mapping[str, Any]]


@dataclass(frozen=True)
class TrainConfig:
    """How long to train and when to evaluate, save and log; what to keep as ``best``.

    ``eval_every=0``: evaluate only at the end. ``checkpoint_every`` defaults to ``eval_every``.
    ``resume``: False, True (``run_dir/checkpoints/last`` if present) or a checkpoint/run path.
    """

    max_steps: int
    eval_every: int = 1000
    checkpoint_every: int | None = None
    log_every: int = 50
    best_metric: str | None = None
    best_mode: str = "max"
    seed: int = 0
    resume: bool | str = False
    grad_clip: float | None = None
    grad_accum_steps: int = 1
    channels_last: bool = False
    compile: str = "off"  # tasks.common.compile.COMPILE_MODES
    progress: bool = True
    task: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.max_steps, int) or self.max_steps <= 0:
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0: only at the end), got {self.eval_every}")
        if self.log_every <= 0:
            raise ValueError(f"log_every must be positive, got {self.log_every}")
        if self.best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {self.best_mode!r}")
        if not isinstance(self.grad_accum_steps, int) or self.grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be a positive integer, got {self.grad_accum_steps!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        check_mode(self.compile)

    @property
    def save_every(self) -> int:
        return self.eval_every if self.checkpoint_every is None else self.checkpoint_every


def _batch_size(batch: Any) -> int:
    """Samples in a batch: the leading size of its first tensor, or the length of a per-sample list.

    Per-sample lists are lists of dicts (detection targets) or of single images (3-D tensors).
    """
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else 1
    if isinstance(batch, Mapping):
        return _batch_size(next(iter(batch.values()))) if batch else 0
    if isinstance(batch, (list, tuple)) and batch:
        if isinstance(batch[0], Mapping) or all(isinstance(t, torch.Tensor) and t.dim() == 3 for t in batch):
            return len(batch)
        return _batch_size(batch[0])
    return 0


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

    ``loss_fn(model, batch)`` returns a loss tensor or ``(loss, {name: float})``; with
    ``settings.compile`` it gets the compiled wrapper (under CUDA graphs the next step's replay
    overwrites this step's outputs: keep numbers, not output tensors, across steps).
    ``evaluate_fn(model, accelerator, step)`` returns ``{metric: value}`` already reduced over the
    processes (shard its loader with ``tasks.common.distributed.prepare_eval_loader`` and use
    ``accelerator.gather_for_metrics``); it gets the unwrapped model in eval mode under
    ``torch.no_grad``. Non-scalar values (per-class lists...) reach the summary's final/best but
    not the history; a ``"per_sample"`` entry (``{name: array}``, see :mod:`tasks.common.per_sample`)
    is stored with the checkpoint of the weights it scored and, for the final evaluation, beside
    the summary. ``config`` is the run's record (``config.json``, W&B config, summary);
    ``description`` says how to rebuild the network: every checkpoint then holds
    ``network.safetensors`` + ``network.json`` for the evaluation tools. ``summary_extra`` adds
    fields to the summary. ``accelerator`` defaults to ``make_accelerator()``.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_loader, loss_fn: Callable,
                 settings: TrainConfig, run_dir, *, evaluate_fn: EvaluateFn | None = None, scheduler=None,
                 tracker: Tracker | None = None, accelerator: Accelerator | None = None,
                 config: Mapping[str, Any] | None = None, description: ModelDescription | None = None,
                 summary_extra: Mapping[str, Any] | None = None) -> None:
        if not hasattr(train_loader, "__len__"):
            raise ValueError("train_loader must have a length (a map-style data set): epochs and exact "
                             "resume are derived from it")
        self.settings = settings
        self.accelerator = accelerator or make_accelerator("no")
        self.model, self.optimizer, self.train_loader, self.scheduler = model, optimizer, train_loader, scheduler
        self.loss_fn, self.evaluate_fn = loss_fn, evaluate_fn
        self.run_dir = Path(run_dir)
        self.description, self.summary_extra = description, dict(summary_extra or {})
        self.config = dict(config or {})
        recorded = {k: v for k, v in asdict(settings).items() if k not in ("progress", "resume")}
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
        self._prepared = False
        self._improved = False
        self._lr = float("nan")
        self._per_sample: Mapping[str, Any] | None = None  # of the latest evaluation
        self.optimizer_changes: list[dict[str, Any]] = []  # settings changed on --resume, by step

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        acc, settings = self.accelerator, self.settings
        self._segment_start = time.perf_counter()
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        # The same seed on every process while preparing: Accelerate's seedable sampler takes its
        # seed from torch here, and all processes must shuffle alike to split one permutation.
        set_seed(settings.seed)
        if settings.channels_last:  # NHWC weights make convolutions pick NHWC kernels (tensor cores)
            self.model.to(memory_format=torch.channels_last)
        prepared = acc.prepare(self.model, self.optimizer, self.train_loader,
                               *([self.scheduler] if self.scheduler is not None else []))
        self.model, self.optimizer, self.train_loader = prepared[:3]
        if self.scheduler is not None:
            self.scheduler = prepared[3]
        self._train_model = compile_for_training(self.model, settings.compile, acc.device)
        set_seed(settings.seed, device_specific=True)  # then different dropout masks per process
        self._data_rng = DataRNG(settings.seed, acc.process_index)
        # An optimizer step never spans two epochs: leftover micro-batches (< grad_accum_steps) are skipped.
        self.steps_per_epoch = len(self.train_loader) // settings.grad_accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training loader yields {len(self.train_loader)} batch(es) per epoch and process "
                             f"({acc.num_processes} process(es)), fewer than one optimizer step of "
                             f"{settings.grad_accum_steps} batch(es): lower --batch-size or the accumulation")
        self._prepared = True

        checkpoint = decided_on_main_process(self._find_checkpoint, acc)
        state: dict[str, Any] = {}
        if checkpoint is not None:
            requested = optimizer_settings(self.optimizer)  # what this run's options ask for
            self._load(checkpoint)
            state = read_trainer_state(checkpoint)
            self._restore(state, checkpoint)
            self._take_requested_settings(requested, checkpoint)
            if acc.is_main_process:
                repair_best(self.run_dir, checkpoint, self.best_step)
        if self.optimizer_changes:  # the record says from which step each setting held
            self.config["optimizer_changes"] = self.optimizer_changes
            self.tracker.config["optimizer_changes"] = self.optimizer_changes
        self.environment = environment_info()
        if acc.is_main_process:
            write_json_atomic(self.run_dir / "config.json", self.config)
            self.tracker.start(run_id=state.get("tracker_run_id"))
            self.tracker.truncate_history(self.step if checkpoint is not None else -1)
            self.tracker.update_summary({"params": self._count_params()})

    def _find_checkpoint(self) -> Path | None:
        # May finish an interrupted checkpoint swap: one process only (decided_on_main_process).
        path = find_resume_checkpoint(self.run_dir, self.settings.resume)
        if self.settings.resume and path is None:
            note(f"no checkpoint in {self.run_dir / 'checkpoints'}; starting from step 0")
        return path

    def _load(self, checkpoint: Path) -> None:
        damaged = find_damaged_file(checkpoint)
        if damaged is not None:  # a torn file is not a settings mismatch: say which file it is
            path, problem = damaged
            raise ValueError(f"--resume: {path} is damaged ({problem}), so {checkpoint} cannot be resumed; "
                             "give --resume another checkpoint of the run (e.g. checkpoints/best) or a good copy")
        try:
            self.accelerator.load_state(str(checkpoint))
        except (RuntimeError, ValueError, KeyError) as error:  # another network, optimizer or file set
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
        if not self.is_main_process:
            return
        print(f"resumed from {checkpoint} at step {self.step}", flush=True)
        saved_epoch_length = state.get("steps_per_epoch")
        if saved_epoch_length not in (None, self.steps_per_epoch):
            warn(f"the checkpoint had {saved_epoch_length} optimizer steps per epoch, now "
                 f"{self.steps_per_epoch} (batch size or process count changed): the data order "
                 "will differ from the original run")
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
        text = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changed.items())
        note(f"--resume with other optimiser settings than {checkpoint}: {text} from step {self.step} "
             "on (recorded in config.json as optimizer_changes)")

    def _count_params(self) -> int:
        return sum(p.numel() for p in self.accelerator.unwrap_model(self.model).parameters())

    # -- main loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``max_steps`` (evaluating and checkpointing on the way); return the summary."""
        if self._prepared:
            raise RuntimeError("Trainer.fit() can only be called once")
        self._setup()
        try:
            self._train()
        except NonFiniteLossError:
            self._finish_after_failure("failed: non-finite loss")
            raise
        except KeyboardInterrupt:
            self._finish_after_failure("interrupted")
            raise
        except Exception as error:
            self._finish_after_failure(f"failed: {type(error).__name__}")
            raise
        return self._finish("completed")

    def _finish_after_failure(self, status: str) -> None:
        """Record the failure without hiding it: on a full disk the summary may not be writable."""
        try:
            self._finish(status, exit_code=1)
        except OSError as error:
            warn(f"could not record the failed run's summary in {self.run_dir} ({error})")

    def _train(self) -> None:
        acc, settings = self.accelerator, self.settings
        self.model.train()
        bar = progress(total=settings.max_steps, initial=self.step, desc=settings.task or "train", unit="step",
                       main_process=acc.is_main_process and settings.progress)
        window = _Window()
        try:
            while self.step < settings.max_steps:
                epoch, done = divmod(self.step, self.steps_per_epoch)
                seen = done * settings.grad_accum_steps
                loader = acc.skip_first_batches(self.train_loader, seen) if seen else self.train_loader
                set_epoch(loader, epoch)
                seed_loader_generator(loader, settings.seed + acc.process_index, epoch)
                if done == 0:  # each epoch's loading stream starts fresh; mid-epoch, the restored one goes on
                    self._data_rng.reseed(epoch)
                batches = iter(loader)
                for _ in range(self.steps_per_epoch - done):
                    loss, extras, samples = self._train_step(batches)
                    self.step += 1
                    window.add(loss, extras, samples)
                    bar.update(1)
                    last_step = self.step == settings.max_steps
                    if self.step % settings.log_every == 0 or last_step:
                        self._log_train(window, bar)
                        window = _Window()
                    if self._due(settings.eval_every) or last_step:
                        self._evaluate_keeping_the_steps(bar)
                    # An improving evaluation is saved at once: `best` is a copy of `last`, so it
                    # holds the evaluated weights even when checkpoint_every differs from eval_every.
                    if self._due(settings.save_every) or last_step or self._improved:
                        self.save()
                    if self.step >= settings.max_steps:
                        break
                else:
                    # Run the loader to its end (leftover micro-batches, if any) so Accelerate
                    # closes the epoch cleanly instead of keeping an abandoned iterator active.
                    with self._data_rng.active():
                        for _ in batches:
                            pass
        finally:
            bar.close()
        if self.last_eval_step != self.step:  # resumed at or past max_steps: make sure final numbers exist
            self._evaluate_keeping_the_steps(None)
            self.save()

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _train_step(self, batches) -> tuple[float, dict[str, float], int]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns (loss, extras, samples)."""
        acc, settings = self.accelerator, self.settings
        accumulate = settings.grad_accum_steps
        loss_sum, extras_sum, samples = 0.0, {}, 0
        for micro in range(accumulate):
            with self._data_rng.active():  # data loading never consumes the training RNG
                batch = next(batches, None)
            if batch is None:
                raise RuntimeError("the training loader yielded fewer batches than its length")
            samples += _batch_size(batch) * acc.num_processes
            last = micro == accumulate - 1
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            with contextlib.nullcontext() if last else acc.no_sync(self.model):
                begin_step(settings.compile, acc.device)
                with acc.autocast():
                    output = self.loss_fn(self._train_model, batch)
                loss, extras = output if isinstance(output, tuple) else (output, {})
                losses = acc.gather(loss.detach().float().reshape(1))
                check_losses(losses, self.step + 1, self.run_dir, acc.mixed_precision, settings.grad_clip)
                acc.backward(loss / accumulate if accumulate > 1 else loss)
            loss_sum += float(losses.mean())
            for key, value in extras.items():
                extras_sum[key] = extras_sum.get(key, 0.0) + float(value)
        extras = {k: v / accumulate for k, v in extras_sum.items()}
        if settings.grad_clip is not None:
            extras["grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(), settings.grad_clip))
            # fp16's loss scaler skips such steps by itself; otherwise they would poison the weights.
            if acc.mixed_precision != "fp16":
                check_losses(torch.tensor([extras["grad_norm"]]), self.step + 1, self.run_dir,
                             acc.mixed_precision, settings.grad_clip, what="gradient norm")
        self._lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / accumulate, extras, samples

    def _log_train(self, window: "_Window", bar) -> None:
        acc = self.accelerator
        metrics = window.means()
        if acc.num_processes > 1 and window.extras:  # the loss is already gathered; extras are local
            names = sorted(window.extras)
            values = acc.reduce(torch.tensor([metrics[n] for n in names], device=acc.device), "mean")
            metrics.update(dict(zip(names, values.tolist())))
        metrics["lr"] = self._lr
        metrics.update(window.rates())
        if acc.is_main_process:
            self.tracker.log(metrics, self.step, split="train")
            bar.set_postfix(loss=f"{metrics['loss']:.4g}", lr=f"{metrics['lr']:.3g}", refresh=False)

    # -- evaluation, checkpoints ------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Run ``evaluate_fn`` (eval mode, no grad, training RNG untouched) and return plain values."""
        if self.evaluate_fn is None:
            return {}
        sync_buffers(self.model, self.accelerator)  # every process scores the statistics that are saved
        self.model.eval()
        try:
            with rng_fork(), torch.no_grad():
                metrics = self.evaluate_fn(self.accelerator.unwrap_model(self.model), self.accelerator, self.step)
        finally:
            self.model.train()
        if not isinstance(metrics, Mapping):
            raise TypeError(f"evaluate_fn must return a dict of metrics, got {type(metrics).__name__}")
        metrics = dict(metrics)
        self._per_sample = metrics.pop(PER_SAMPLE_KEY, None)
        return {str(k): _plain(v) for k, v in metrics.items()}

    def _evaluate_and_record(self, bar) -> None:
        metrics = self.evaluate()
        self.final, self.last_eval_step = metrics, self.step
        self._improved = False
        name = self.settings.best_metric
        if name is not None and metrics:
            if name not in metrics:
                raise ValueError(f"best_metric {name!r} is not among the evaluation metrics "
                                 f"({', '.join(metrics) or 'none'})")
            value = metrics[name]
            if not isinstance(value, float):
                raise ValueError(f"best_metric {name!r} must be a number, got {type(value).__name__}")
            if math.isfinite(value) and (self.best_value is None or self._better(value, self.best_value)):
                self.best_value, self.best_step, self.best, self._improved = value, self.step, metrics, True
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
        if self.is_main_process and metrics:
            self.tracker.log(scalars, self.step, split="eval")
            text = "  ".join(f"{k}={v:.4f}" for k, v in scalars.items())
            (bar.write if bar is not None else print)(f"step {self.step}: {text}")

    def _evaluate_keeping_the_steps(self, bar) -> None:
        """Evaluate; when the evaluation fails, save the trained weights first, then re-raise with a
        note saying where they are (a bad evaluation file must not cost the training)."""
        try:
            self._evaluate_and_record(bar)
        except Exception as error:
            self._improved = False
            try:
                where = f"the weights of step {self.step} are saved in {self.save()}"
            except Exception as save_error:  # noqa: BLE001 - the evaluation's error stays the one raised
                where = f"saving the weights of step {self.step} failed too ({save_error})"
            error.add_note(f"(evaluation at step {self.step} failed; {where}: fix the cause and run the same "
                           "command with --resume to evaluate them)")
            raise

    def _better(self, value: float, reference: float) -> bool:
        return value > reference if self.settings.best_mode == "max" else value < reference

    def _progress(self) -> dict[str, Any]:
        """What a resume restores and the summary reports."""
        settings = self.settings
        return {
            "step": self.step, "epoch": self.step // self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
            "max_steps": settings.max_steps, "seed": settings.seed, "num_processes": self.accelerator.num_processes,
            "best_metric": settings.best_metric, "best_mode": settings.best_mode, "best_value": self.best_value,
            "best_step": self.best_step, "best": self.best, "final": self.final,
            "last_eval_step": self.last_eval_step, "wall_time_s": self.wall_time(),
            "tracker_run_id": self.tracker.run_id, "optimizer_changes": self.optimizer_changes,
        }

    def save(self) -> Path:
        """Write ``checkpoints/last`` (and ``best`` after an improving evaluation) atomically.

        Weights that are no longer finite (a finite loss with an overflowing gradient, without
        ``grad_clip`` to catch it) raise :class:`NonFiniteLossError` instead of replacing the last
        good checkpoint.
        """
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        reduce = (lambda count: acc.reduce(count.to(acc.device), "sum").cpu()) if acc.num_processes > 1 else None
        check_weights(model, self.step, self.run_dir, reduce)
        sync_buffers(self.model, acc)
        network = acc.unwrap_model(model, keep_fp32_wrapper=False)
        per_sample = self._per_sample if self.last_eval_step == self.step else None

        def export(folder: Path) -> None:  # main process, before the checkpoint is marked complete
            if self.description is not None:
                save_model(folder, network, self.description)
            if per_sample is not None:
                save_per_sample(folder, per_sample)

        data_rng = lambda folder: self._data_rng.save(folder / f"data_rng_{acc.process_index}.pt")  # noqa: E731
        best = (lambda last: link_checkpoint(last, self.run_dir / "checkpoints" / "best")) if self._improved else None
        last = save_checkpoint(acc, self.run_dir / "checkpoints" / "last", self._progress(), extra=export,
                               per_process=data_rng, then=best)
        self._improved = False
        return last

    def wall_time(self) -> float:
        return self.previous_wall_time + (time.perf_counter() - self._segment_start)

    # -- summary --------------------------------------------------------------------------------
    def summary(self, status: str) -> dict[str, Any]:
        settings = self.settings
        return build_summary(
            task=settings.task, name=self.tracker.name or self.run_dir.name,
            config={"seed": settings.seed, **self.config, "group": self.config.get("group") or self.tracker.group},
            progress=self._progress(), params=self._count_params(), primary_metric=settings.best_metric,
            primary_mode=settings.best_mode, status=status,
            environment=getattr(self, "environment", None) or environment_info(), extra=self.summary_extra)

    def _finish(self, status: str, exit_code: int = 0) -> dict:
        summary = self.summary(status)
        if self.is_main_process:
            if self._per_sample is not None and self.last_eval_step == self.step:  # the final evaluation's
                self.tracker.save_file(save_per_sample(self.run_dir / PER_SAMPLE_FILE, self._per_sample))
            write_summary(self.run_dir, summary)
            keys = ("final", "best", "best_step", "steps", "params", "macs", "wall_time_s", "status",
                    "primary_metric")
            self.tracker.update_summary({k: summary[k] for k in keys})
            self.tracker.finish(exit_code=exit_code)
        return summary


class _Window:
    """Running means of the loss and extra metrics between two log lines, plus throughput."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.steps, self.samples, self.loss = 0, 0, 0.0
        self.extras: dict[str, float] = {}

    def add(self, loss: float, extras: Mapping[str, float], samples: int) -> None:
        self.steps += 1
        self.samples += samples
        self.loss += loss
        for key, value in extras.items():
            self.extras[key] = self.extras.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        steps = max(self.steps, 1)
        return {"loss": self.loss / steps, **{k: v / steps for k, v in self.extras.items()}}

    def rates(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"steps_per_s": self.steps / elapsed, "samples_per_s": self.samples / elapsed}
