"""The training loop every task shares, on top of Hugging Face Accelerate.

The loop counts optimizer steps (``max_steps``); epochs follow from the length of the prepared
loader. It evaluates and checkpoints every ``eval_every`` steps and at the end, keeps ``last`` and
``best`` checkpoints (written atomically, see :mod:`tasks.common.checkpoint`), and resumes to the
exact step. On the CPU a resumed run reaches bit-identical weights to an uninterrupted one because

* the RNG states are part of the checkpoint (``accelerator.save_state``);
* data loading runs on its own RNG stream (torch, NumPy and ``random``; saved per process in the
  checkpoint) and evaluation under a forked RNG, so neither consumes the training RNG;
* the data order is a pure function of ``(seed, epoch)`` (``EpochSeededSampler``, or the seedable
  sampler Accelerate substitutes for a shuffling loader) and a resumed epoch skips the batches
  already seen; per-sample augmentation should use the sampler's ``sample_seed``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

from .checkpoint import (
    find_resume_checkpoint,
    link_checkpoint,
    read_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
)
from tasks.utils.files import write_json_atomic
from tasks.utils.progress import progress
from tasks.data.sampling import sample_seed
from .seeding import seed_everything
from .summary import environment_info, write_summary
from .tracking import Tracker

__all__ = ["Trainer", "NonFiniteLossError", "prepare_eval_loader", "make_accelerator", "cpu_processes_wanted"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def shutdown_distributed() -> None:
    """Leave the process group cleanly (every process, at the end of a command).

    A gloo process that exits with its process group still up can die in C++ teardown
    ("terminate called without an active exception"), failing a run that had finished.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # nobody tears down while another process still talks to it
        dist.destroy_process_group()


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
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(outcome, from_process=0)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def make_accelerator(mixed_precision: str | None = "no", cpu: bool = False,
                     fixed_shapes: bool = True) -> Accelerator:
    """The Accelerator the trainer uses (schedulers step once per optimizer step, data order seeded).

    ``mixed_precision=None`` takes ``accelerate launch --mixed_precision`` / ``accelerate config``'s
    setting (else "no"). Launched as several processes on a machine without a GPU (``accelerate
    launch --multi_gpu --num_processes 2``), the processes run as gloo CPU processes instead of as
    independent copies of one run. ``fixed_shapes`` (batches of one shape, as in SR and
    classification) lets cuDNN benchmark its kernels once; varying shapes would re-benchmark.
    """
    cpu = cpu or cpu_processes_wanted()
    if mixed_precision is None:
        mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"--mixed-precision must be no, fp16 or bf16, got {mixed_precision!r}")
    if mixed_precision == "fp16" and (cpu or not torch.cuda.is_available()):
        raise ValueError("--mixed-precision fp16 needs a GPU; use bf16 or no on the CPU")
    if torch.cuda.is_available() and not cpu:
        # fp32 matrix products may use TF32, as cuDNN's convolutions already do by default.
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = fixed_shapes
    return Accelerator(
        mixed_precision=mixed_precision,
        cpu=cpu,
        # Schedulers are defined in optimizer steps of this loop; Accelerate would otherwise step
        # them once per process.
        step_scheduler_with_optimizer=False,
        # A plain shuffling DataLoader gets a sampler whose order depends on (seed, epoch) only.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def cpu_processes_wanted() -> bool:
    """True when launched as several processes but no GPU is there: they must be CPU processes."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def prepare_eval_loader(accelerator: Accelerator, loader: torch.utils.data.DataLoader):
    """Shard an evaluation loader over the processes (use with ``accelerator.gather_for_metrics``).

    Unlike ``accelerator.prepare`` it does not register the loader for checkpointing, so it may be
    called at every evaluation.
    """
    from accelerate.data_loader import prepare_data_loader

    return prepare_data_loader(
        loader, device=accelerator.device, num_processes=accelerator.num_processes,
        process_index=accelerator.process_index, put_on_device=True, even_batches=True,
    )


class _DataRNG:
    """The global-RNG stream data loading runs on, kept apart from the training stream.

    Data sets that draw augmentation from torch's/NumPy's/Python's global RNG (and are loaded in
    the main process) continue this stream batch after batch; it is saved with each checkpoint,
    so such a run also resumes exactly with ``num_workers=0``. With workers, or for any worker
    count, use the sampler's per-sample seeds for exact resumes.
    """

    def __init__(self, seed: int, process_index: int) -> None:
        self.seed, self.process_index = seed, process_index
        self.reseed(0)

    def reseed(self, epoch: int) -> None:
        """Start the stream of ``epoch`` (each epoch starts fresh, so epoch boundaries resume trivially)."""
        # Index -3: a stream of its own (EpochSeededSampler's order uses -1 and the loader's
        # worker-seed generator -2; with -1 this stream would replay the shuffling draws).
        value = int(sample_seed(self.seed + 7919 * self.process_index, epoch, -3))
        generator = torch.Generator()
        generator.manual_seed(value)
        self.torch_state = generator.get_state()
        self.numpy_state = np.random.RandomState(value % 2**32).get_state()
        self.python_state = random.Random(value).getstate()
        self.before = None

    @contextlib.contextmanager
    def active(self):
        # Accelerate's loader reads one batch ahead, so the state to resume from is the one before
        # the latest fetch (the look-ahead batch is fetched again after a resume).
        self.before = self.torch_state, self.numpy_state, self.python_state
        saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
        torch.set_rng_state(self.torch_state)
        np.random.set_state(self.numpy_state)
        random.setstate(self.python_state)
        try:
            yield
        finally:
            self.torch_state, self.numpy_state, self.python_state = (
                torch.get_rng_state(), np.random.get_state(), random.getstate())
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])

    def save(self, path: Path) -> None:
        torch_state, numpy_state, python_state = self.before or (
            self.torch_state, self.numpy_state, self.python_state)
        kind, keys, position, has_gauss, gauss = numpy_state
        version, python_internal, python_gauss = python_state
        torch.save({"torch": torch_state, "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position,
                                                         has_gauss, gauss],
                    "python": [version, list(python_internal), python_gauss]}, path)

    def load(self, path: Path) -> None:
        state = torch.load(path, weights_only=True)
        kind, keys, position, has_gauss, gauss = state["numpy"]
        self.torch_state = state["torch"]
        self.numpy_state = (kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss)
        version, internal, gauss_next = state["python"]
        self.python_state = (version, tuple(internal), gauss_next)


def _seed_loader_generator(loader: Any, seed: int, epoch: int) -> None:
    """Give the loader its own generator for worker seeds, so creating an iterator draws nothing
    from the global RNG and worker seeds depend on (seed, epoch) only."""
    generator = torch.Generator()
    generator.manual_seed(int(sample_seed(seed, epoch, -2)))
    target = getattr(loader, "base_dataloader", loader)
    target.generator = generator


@contextlib.contextmanager
def _rng_fork():
    """Run a block without consuming the (CPU and current CUDA device) training RNG."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        yield


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


def _set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader and every sampler it wraps which epoch is next."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    seen, stack = set(), [getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
        stack += [getattr(obj, "batch_sampler", None), getattr(obj, "sampler", None)]


class Trainer:
    """Train ``model`` for ``max_steps`` optimizer steps; see the module docstring.

    ``loss_fn(model, batch)`` returns a loss tensor or ``(loss, {name: float})``.
    ``evaluate_fn(model, accelerator)`` returns ``{metric: float}`` already reduced over processes
    (shard its loader with :func:`prepare_eval_loader` and use ``accelerator.gather_for_metrics``);
    non-scalar values (per-class IoU lists...) go to the summary's final/best but not to the history;
    it gets the unwrapped model in eval mode under ``torch.no_grad``.
    ``on_save(model, folder)`` (optional, main process) adds files such as a self-describing
    ``model.pt`` to each checkpoint before it is marked complete; ``summary_extra`` overrides or
    adds summary fields (``macs``...). ``accelerator`` defaults to :func:`make_accelerator`.
    """

    def __init__(self, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_loader,
                 loss_fn: Callable, evaluate_fn: Callable | None, run_dir, config: Mapping[str, Any],
                 max_steps: int, scheduler=None, eval_every: int = 1000, best_metric: str | None = None,
                 best_mode: str = "max", mixed_precision: str | None = "no", seed: int = 0, resume=False,
                 tracker: Tracker | None = None, grad_clip: float | None = None, task: str = "",
                 log_every: int = 50, accelerator: Accelerator | None = None,
                 checkpoint_every: int | None = None, summary_extra: Mapping[str, Any] | None = None,
                 on_save: Callable[[torch.nn.Module, Path], None] | None = None, grad_accum_steps: int = 1,
                 batch_size_fn: Callable[[Any], int] | None = None, progress: bool = True,
                 channels_last: bool = False) -> None:
        if not isinstance(max_steps, int) or max_steps <= 0:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        if eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0: only at the end), got {eval_every}")
        if log_every <= 0:
            raise ValueError(f"log_every must be positive, got {log_every}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if not isinstance(grad_accum_steps, int) or grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be a positive integer, got {grad_accum_steps!r}")
        if not hasattr(train_loader, "__len__"):
            raise ValueError("train_loader must have a length (a map-style data set): epochs and exact "
                             "resume are derived from it")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
        self.accelerator = accelerator or make_accelerator(mixed_precision)
        self.model, self.optimizer, self.train_loader, self.scheduler = model, optimizer, train_loader, scheduler
        self.loss_fn, self.evaluate_fn = loss_fn, evaluate_fn
        self.run_dir = Path(run_dir)
        self.max_steps, self.eval_every, self.log_every = max_steps, eval_every, log_every
        self.checkpoint_every = eval_every if checkpoint_every is None else checkpoint_every
        self.best_metric, self.best_mode = best_metric, best_mode
        self.seed, self.resume, self.grad_clip, self.task = seed, resume, grad_clip, task
        self.progress, self.on_save, self.grad_accum_steps = progress, on_save, grad_accum_steps
        self.channels_last = channels_last
        self.batch_size_fn = batch_size_fn or _batch_size  # for throughput (samples/s)
        self.summary_extra = dict(summary_extra or {})
        self.config = dict(config)
        for key, value in (("task", task), ("seed", seed), ("max_steps", max_steps), ("eval_every", eval_every),
                           ("grad_accum_steps", grad_accum_steps),
                           ("mixed_precision", self.accelerator.mixed_precision), ("grad_clip", grad_clip),
                           ("channels_last", channels_last),
                           ("num_processes", self.accelerator.num_processes)):
            self.config.setdefault(key, value)
        self.tracker = tracker or Tracker(self.run_dir, self.config, mode="disabled", task=task)
        for key, value in self.config.items():  # the trainer's settings reach W&B's config too
            self.tracker.config.setdefault(key, value)
        # Training state (restored on resume).
        self.step = 0
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best: dict[str, float] = {}
        self.final: dict[str, float] = {}
        self.last_eval_step: int | None = None
        self.previous_wall_time = 0.0
        self._prepared = False
        self._improved = False

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        acc = self.accelerator
        self._segment_start = time.perf_counter()
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        # The same seed on every process while preparing: Accelerate's seedable sampler takes its
        # seed from torch here, and all processes must shuffle alike to split one permutation.
        seed_everything(self.seed)
        if self.channels_last:  # NHWC weights make convolutions pick NHWC kernels (tensor cores)
            self.model.to(memory_format=torch.channels_last)
        prepared = acc.prepare(self.model, self.optimizer, self.train_loader,
                               *([self.scheduler] if self.scheduler is not None else []))
        self.model, self.optimizer, self.train_loader = prepared[:3]
        if self.scheduler is not None:
            self.scheduler = prepared[3]
        seed_everything(self.seed, acc.process_index)  # then different dropout masks per process
        self._data_rng = _DataRNG(self.seed, acc.process_index)
        # An optimizer step never spans two epochs: leftover micro-batches (< grad_accum_steps) are skipped.
        self.steps_per_epoch = len(self.train_loader) // self.grad_accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training loader yields {len(self.train_loader)} batch(es) per epoch and process "
                             f"({acc.num_processes} process(es)), fewer than one optimizer step of "
                             f"{self.grad_accum_steps} batch(es): lower --batch-size or the accumulation")
        self._prepared = True

        checkpoint = self._find_checkpoint()
        state: dict[str, Any] = {}
        if checkpoint is not None:
            try:
                acc.load_state(str(checkpoint))
            except (RuntimeError, ValueError, KeyError) as error:  # another network, optimizer or file set
                detail = " ".join(str(error).split())[:500]
                raise ValueError(f"--resume: {checkpoint} does not fit this run's model, optimizer or "
                                 f"scheduler (was it written with other settings?): {detail}") from error
            data_rng = checkpoint / f"data_rng_{acc.process_index}.pt"
            if data_rng.is_file():
                self._data_rng.load(data_rng)
            state = read_trainer_state(checkpoint)
            self._restore(state, checkpoint)
            if acc.is_main_process:
                self._repair_best(checkpoint)
        self.environment = environment_info()
        if acc.is_main_process:
            write_json_atomic(self.run_dir / "config.json", self.config)
            self.tracker.start(run_id=state.get("tracker_run_id"))
            self.tracker.truncate_history(self.step if checkpoint is not None else -1)
            self.tracker.update_summary({"params": self._count_params()})

    def _find_checkpoint(self) -> Path | None:
        def find() -> Path | None:  # may finish an interrupted checkpoint swap: one process only
            path = find_resume_checkpoint(self.run_dir, self.resume)
            if self.resume and path is None:
                print(f"note: no checkpoint in {self.run_dir / 'checkpoints'}; starting from step 0", flush=True)
            return path

        return decided_on_main_process(find, self.accelerator)

    def _restore(self, state: Mapping[str, Any], checkpoint: Path) -> None:
        self.step = int(state["step"])
        self.best_value, self.best_step = state.get("best_value"), state.get("best_step")
        self.best, self.final = dict(state.get("best") or {}), dict(state.get("final") or {})
        self.last_eval_step = state.get("last_eval_step")
        self.previous_wall_time = float(state.get("wall_time_s") or 0.0)
        saved_epoch_length = state.get("steps_per_epoch")
        if self.is_main_process:
            print(f"resumed from {checkpoint} at step {self.step}", flush=True)
            if saved_epoch_length not in (None, self.steps_per_epoch):
                print(f"warning: the checkpoint had {saved_epoch_length} optimizer steps per epoch, now "
                      f"{self.steps_per_epoch} (batch size or process count changed): the data order "
                      "will differ from the original run", flush=True)
            saved_max_steps = state.get("max_steps")
            if self.scheduler is not None and saved_max_steps not in (None, self.max_steps):
                print(f"warning: the checkpoint was written by a run of {saved_max_steps} steps, this one "
                      f"has {self.max_steps}: the learning-rate schedule restored from it keeps its "
                      "original length", flush=True)

    def _repair_best(self, checkpoint: Path) -> None:
        """A kill between writing ``last`` and copying it to ``best`` leaves ``best`` one evaluation
        behind the best value recorded in ``last``: copy it now."""
        if self.best_step is None or self.best_step != self.step:
            return
        best = resolve_checkpoint(self.run_dir / "checkpoints" / "best")
        if best is None or read_trainer_state(best).get("step") != self.step:
            link_checkpoint(checkpoint, self.run_dir / "checkpoints" / "best")

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
            self._finish("failed: non-finite loss", exit_code=1)
            raise
        except KeyboardInterrupt:
            self._finish("interrupted", exit_code=1)
            raise
        except Exception as error:
            self._finish(f"failed: {type(error).__name__}", exit_code=1)
            raise
        return self._finish("completed")

    def _train(self) -> None:
        acc = self.accelerator
        self.model.train()
        bar = progress(total=self.max_steps, initial=self.step, desc=self.task or "train", unit="step",
                       main_process=acc.is_main_process and self.progress)
        window = _Window()
        try:
            while self.step < self.max_steps:
                epoch, done = divmod(self.step, self.steps_per_epoch)
                seen = done * self.grad_accum_steps
                loader = acc.skip_first_batches(self.train_loader, seen) if seen else self.train_loader
                _set_epoch(loader, epoch)
                _seed_loader_generator(loader, self.seed + acc.process_index, epoch)
                if done == 0:  # each epoch's loading stream starts fresh; mid-epoch, the restored one goes on
                    self._data_rng.reseed(epoch)
                batches = iter(loader)
                for _ in range(self.steps_per_epoch - done):
                    loss, extras, samples = self._train_step(batches)
                    self.step += 1
                    window.add(loss, extras, samples)
                    bar.update(1)
                    if self.step % self.log_every == 0 or self.step == self.max_steps:
                        self._log_train(window, bar)
                        window = _Window()
                    if self._due(self.eval_every) or self.step == self.max_steps:
                        self._evaluate_and_record(bar)
                    # An improving evaluation is saved at once: `best` is a copy of `last`, so it
                    # holds the evaluated weights even when checkpoint_every differs from eval_every.
                    if self._due(self.checkpoint_every) or self.step == self.max_steps or self._improved:
                        self.save()
                    if self.step >= self.max_steps:
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
            self._evaluate_and_record(None)
            self.save()

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _train_step(self, batches) -> tuple[float, dict[str, float], int]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns (loss, extras, samples)."""
        acc, accumulate = self.accelerator, self.grad_accum_steps
        loss_sum, extras_sum, samples = 0.0, {}, 0
        for micro in range(accumulate):
            with self._data_rng.active():  # data loading never consumes the training RNG
                batch = next(batches, None)
            if batch is None:
                raise RuntimeError("the training loader yielded fewer batches than its length")
            samples += self.batch_size_fn(batch) * acc.num_processes
            last = micro == accumulate - 1
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            with contextlib.nullcontext() if last else acc.no_sync(self.model):
                with acc.autocast():
                    output = self.loss_fn(self.model, batch)
                loss, extras = output if isinstance(output, tuple) else (output, {})
                losses = acc.gather(loss.detach().float().reshape(1))
                if not bool(torch.isfinite(losses).all()):
                    self._raise_non_finite(losses)
                acc.backward(loss / accumulate if accumulate > 1 else loss)
            loss_sum += float(losses.mean())
            for key, value in extras.items():
                extras_sum[key] = extras_sum.get(key, 0.0) + float(value)
        extras = {k: v / accumulate for k, v in extras_sum.items()}
        if self.grad_clip is not None:
            extras["grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(), self.grad_clip))
            # fp16's loss scaler skips such steps by itself; otherwise they would poison the weights.
            if not math.isfinite(extras["grad_norm"]) and acc.mixed_precision != "fp16":
                self._raise_non_finite(torch.tensor([extras["grad_norm"]]), what="gradient norm")
        self._lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / accumulate, extras, samples

    def _raise_non_finite(self, losses: torch.Tensor, what: str = "training loss") -> None:
        values = ", ".join(f"{v:g}" for v in losses.tolist())
        hint = "lower the learning rate"
        if self.accelerator.mixed_precision == "fp16":
            hint += ", or disable fp16 (--mixed-precision bf16 or no)"
        elif self.grad_clip is None:
            hint += " or add gradient clipping"
        raise NonFiniteLossError(f"non-finite {what} ({values}) at step {self.step + 1}: {hint}{self._kept_note()}")

    def _kept_note(self) -> str:
        last = self.run_dir / "checkpoints" / "last"
        return f"; the last good checkpoint is kept in {last}" if last.is_dir() else "; no checkpoint was written yet"

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
    def evaluate(self) -> dict[str, float]:
        """Run ``evaluate_fn`` (eval mode, no grad, training RNG untouched) and return plain floats."""
        if self.evaluate_fn is None:
            return {}
        self.model.eval()
        try:
            with _rng_fork(), torch.no_grad():
                metrics = self.evaluate_fn(self.accelerator.unwrap_model(self.model), self.accelerator)
        finally:
            self.model.train()
        if not isinstance(metrics, Mapping):
            raise TypeError(f"evaluate_fn must return a dict of floats, got {type(metrics).__name__}")
        return {str(k): _plain(v) for k, v in metrics.items()}

    def _evaluate_and_record(self, bar) -> None:
        metrics = self.evaluate()
        self.final, self.last_eval_step = metrics, self.step
        self._improved = False
        if self.best_metric is not None and metrics:
            if self.best_metric not in metrics:
                raise ValueError(f"best_metric {self.best_metric!r} is not among the evaluation metrics "
                                 f"({', '.join(metrics) or 'none'})")
            value = metrics[self.best_metric]
            if not isinstance(value, float):
                raise ValueError(f"best_metric {self.best_metric!r} must be a number, got {type(value).__name__}")
            if math.isfinite(value) and (self.best_value is None or self._better(value, self.best_value)):
                self.best_value, self.best_step, self.best, self._improved = value, self.step, metrics, True
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
        if self.is_main_process and metrics:
            self.tracker.log(scalars, self.step, split="eval")
            text = "  ".join(f"{k}={v:.4f}" for k, v in scalars.items())
            (bar.write if bar is not None else print)(f"step {self.step}: {text}")

    def _better(self, value: float, reference: float) -> bool:
        return value > reference if self.best_mode == "max" else value < reference

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step, "epoch": self.step // self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
            "max_steps": self.max_steps, "seed": self.seed, "num_processes": self.accelerator.num_processes,
            "best_metric": self.best_metric, "best_mode": self.best_mode, "best_value": self.best_value,
            "best_step": self.best_step, "best": self.best, "final": self.final,
            "last_eval_step": self.last_eval_step, "wall_time_s": self.wall_time(),
            "tracker_run_id": self.tracker.run_id,
        }

    def save(self) -> Path:
        """Write ``checkpoints/last`` (and ``best`` after an improving evaluation) atomically.

        Weights that are no longer finite (a finite loss with an overflowing gradient, without
        ``grad_clip`` to catch it) raise :class:`NonFiniteLossError` instead of replacing the last
        good checkpoint.
        """
        self._check_finite_weights()
        checkpoints = self.run_dir / "checkpoints"
        extra = None
        if self.on_save is not None:
            model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
            extra = lambda folder: self.on_save(model, folder)  # noqa: E731
        data_rng = lambda folder: self._data_rng.save(folder / f"data_rng_{self.accelerator.process_index}.pt")  # noqa: E731
        last = save_checkpoint(self.accelerator, checkpoints / "last", self._state(), extra=extra,
                               per_process=data_rng)
        if self._improved and self.is_main_process:
            link_checkpoint(last, checkpoints / "best")
        self._improved = False
        return last

    def _check_finite_weights(self) -> None:
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        tensors = [(name, t) for name, t in (*model.named_parameters(), *model.named_buffers())
                   if t.is_floating_point() or t.is_complex()]
        # One flag per tensor, computed where the tensors live and fetched in one transfer.
        finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in tensors]).cpu() if tensors \
            else torch.ones(0, dtype=torch.bool)
        bad = (~finite).sum().float().reshape(1)
        if acc.num_processes > 1:  # sharded weights may differ per process: all must agree to stop
            bad = acc.reduce(bad.to(acc.device), "sum")
        if float(bad.sum()) == 0:
            return
        names = [name for (name, _), ok in zip(tensors, finite.tolist()) if not ok]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise NonFiniteLossError(
            f"non-finite weights after step {self.step} ({shown or 'on another process'}): a gradient "
            f"overflowed although the loss was finite; lower the learning rate or add gradient "
            f"clipping{self._kept_note()}")

    def wall_time(self) -> float:
        return self.previous_wall_time + (time.perf_counter() - self._segment_start)

    # -- summary --------------------------------------------------------------------------------
    def summary(self, status: str) -> dict[str, Any]:
        env = getattr(self, "environment", None) or environment_info()
        best, best_step = (self.best, self.best_step) if self.best_metric else (self.final, self.last_eval_step)
        summary = {
            "task": self.task, "name": self.tracker.name or self.run_dir.name,
            "group": self.config.get("group") or self.tracker.group, "arch": self.config.get("arch"),
            "attention": self.config.get("attention"), "dataset": self.config.get("dataset"),
            "seed": self.seed, "config": self.config, "git_commit": env.get("git_commit"),
            "git_dirty": env.get("git_dirty"), "hardware": env, "params": self._count_params(),
            "macs": self.config.get("macs"), "final": self.final, "best": best, "best_step": best_step,
            "steps": self.step, "wall_time_s": round(self.wall_time(), 3), "history_file": "metrics.jsonl",
            "primary_metric": self.best_metric, "primary_mode": self.best_mode, "status": status,
        }
        summary.update(self.summary_extra)
        return summary

    def _finish(self, status: str, exit_code: int = 0) -> dict:
        summary = self.summary(status)
        if self.is_main_process:
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
