"""BAM's cost in wall time, base and +BAM measured in the same run (issue 7: performance).

Measures, in one run:

* ``module``: one BAM's forward+backward on a feature map (8 x 256 x 56 x 56, ResNet50's first
  BAM at batch 8): time, aten ops and full-size passes, for the final refinement written as plain
  ops and as ``bam.functional.bam_refine`` (recomputing or keeping the gate);
* ``steps``: training-step throughput (forward, backward, Adam) of ResNet50 (batch 256, 224^2)
  and SRResNet x4 (96^2 HR, batch 16 and 64), base and +BAM variants, eager and compiled, with the
  settings of issue 7's figures (bf16 autocast + channels_last on a GPU, i.e. training with
  ``--mixed-precision bf16 --channels-last``; fp32 on a CPU; ``--precision``/``--memory-format``
  change them), as the
  median of several repeats measured in the same process;
* ``pipeline``: SR training end to end (T91 crops, MATLAB-bicubic LR made in the workers, the
  step) against the step alone on the same batches' shapes, and the loader alone;
* ``metrics``: PSNR+SSIM (Y, BasicSR protocol) of all of Set14 on the device, and with the bicubic
  down/up-scaling included.

    python benchmarks/bench.py                                  # everything, full sizes (GPU)
    python benchmarks/bench.py --markdown benchmarks/RESULTS.md # ...and append the table there
    python benchmarks/bench.py --quick --no-compile             # small sizes, minutes on a CPU
    python benchmarks/bench.py --only steps --variants none,bam,bam-fused --modes eager,compile

Figures are only comparable within one run on one card: the table names the device.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's bam and tasks, not another installed copy
    sys.path.insert(0, str(REPO))

SECTIONS = ("module", "steps", "pipeline", "metrics")
VARIANTS = ("none", "bam", "bam-plain", "bam-fused", "bam-fused-keep")
MODES = ("eager", "compile", "compile-cudagraphs")
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


# --- helpers ------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, torch using {torch.get_num_threads()} threads"


_CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU time of this process)


def clock() -> float:
    return _CLOCK()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate_text(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}/s" if value >= 100 else f"{value:.3g} {unit}/s"


def extra_text(base: float, other: float) -> str:
    """Extra step time of ``other`` relative to ``base`` (rates: samples/s)."""
    return f"{100 * (base / other - 1):+.1f}%"


def median_spread(values: list[float]) -> tuple[float, float]:
    """Median and (max - min) / median, the run-to-run spread."""
    middle = statistics.median(values)
    return middle, (max(values) - min(values)) / middle if middle else 0.0


def autocast_for(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# --- BAM refinement variants (forward of bam.BAM swapped for the duration of a measurement) -----

def _plain_forward(self, x):
    channel = self.channel(x) if self.channel is not None else None
    spatial = self.spatial(x) if self.spatial is not None else None
    refined = x * self.combine(channel, spatial)
    return x + refined if self.identity else refined


def _fused_forward(recompute: bool):
    from bam.functional import bam_refine

    def forward(self, x):
        channel = self.channel(x) if self.channel is not None else None
        spatial = self.spatial(x) if self.spatial is not None else None
        return bam_refine(x, channel, spatial, self.combine_mode, self.identity, recompute=recompute)

    return forward


def _channel_forward(pool):
    def forward(self, x):
        if self.training and x.shape[0] <= 1:
            raise ValueError("BAM channel branch: batch of 1 in training mode")
        out = self.fc2(self.act(self.bn1(self.fc1(pool(x)))))
        return self.bn(out)[:, :, None, None]

    return forward


@contextlib.contextmanager
def bam_variant(variant: str):
    """``bam``: the module as shipped; ``bam-plain``: refinement as plain ops; ``bam-fused``:
    ``bam_refine`` (recompute) and ``global_avg_pool`` in the channel branch; ``bam-fused-keep``:
    the same with ``bam_refine(recompute=False)``."""
    from bam import BAM, ChannelGate
    from bam.functional import global_avg_pool

    forwards = {"bam-plain": _plain_forward, "bam-fused": _fused_forward(True),
                "bam-fused-keep": _fused_forward(False)}
    if variant not in forwards:
        yield
        return
    original, original_channel = BAM.forward, ChannelGate.forward
    BAM.forward = forwards[variant]
    plain_mean = lambda x: x.mean(dim=(2, 3))  # noqa: E731 - autograd's mean (full-size backward)
    ChannelGate.forward = _channel_forward(plain_mean if variant == "bam-plain" else global_avg_pool)
    try:
        yield
    finally:
        BAM.forward, ChannelGate.forward = original, original_channel


# --- section: one BAM module ------------------------------------------------------------------

_NO_PASS = ("detach", "view", "t.", "expand", "unsqueeze", "squeeze", "permute", "_unsafe_view",
            "as_strided", "alias", "slice", "select", "transpose", "empty")


def count_ops(fn, numel: int) -> tuple[int, int]:
    """(aten ops, ops writing a tensor of ``numel`` elements) run by ``fn()``: views and
    allocations are not counted; on a GPU each counted op is (at least) one kernel launch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        ops = full = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.__name__.startswith(_NO_PASS):
                Counter.ops += 1
                Counter.full += isinstance(out, torch.Tensor) and out.numel() == numel
            return out

    with Counter():
        fn()
    return Counter.ops, Counter.full


def module_benchmark(shape, device, precision, channels_last, repeats, steps) -> list[tuple]:
    from bam import BAM

    rows = []
    torch.manual_seed(0)
    module = BAM(shape[1]).to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = module.to(memory_format=memory_format)
    # Inside a network under autocast the feature map arrives in the autocast dtype (a conv's output).
    dtype = PRECISIONS[precision] or torch.float32
    x = torch.randn(shape, device=device, dtype=dtype).to(memory_format=memory_format).requires_grad_()

    def step():
        with autocast_for(device, precision):
            out = module(x)
        out.float().sum().backward()

    for variant in ("bam-plain", "bam-fused", "bam-fused-keep"):
        with bam_variant(variant):
            step()
            ops, full = count_ops(step, x.numel())
            times = []
            for _ in range(repeats):
                synchronize(device)
                start = clock()
                for _ in range(steps):
                    step()
                synchronize(device)
                times.append((clock() - start) / steps)
            peak = None
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                step()
                peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        middle, spread = median_spread(times)
        rows.append((variant, f"{middle * 1e3:.2f} ms (±{50 * spread:.0f}%)", ops, full,
                     "-" if peak is None else f"{peak:.0f} MiB"))
        print("module", rows[-1], flush=True)
    return rows


# --- section: training steps ------------------------------------------------------------------

@dataclass
class Network:
    key: str  # what --networks selects
    name: str
    build: object  # attention -> nn.Module
    input_shape: tuple
    target_shape: tuple  # () for classification
    batch: int
    unit: str


def resnet50(attention: str) -> nn.Module:
    import torchvision

    import bam

    model = torchvision.models.resnet50()
    bam.attach_attention(model, attention, input_size=(3, 224, 224))
    return model


def srresnet_x4(attention: str) -> nn.Module:
    from tasks.sr.model import srresnet

    return srresnet(scale=4, attention=attention)


NETWORKS = ("resnet50", "srresnet16", "srresnet64")


def networks(quick: bool, keys=NETWORKS) -> list[Network]:
    if quick:  # tiny sizes: a smoke run of every code path on a CPU
        nets = [Network("resnet50", "ResNet50 (64^2)", resnet50, (3, 64, 64), (), 4, "img"),
                Network("srresnet16", "SRResNet x4 (48^2 HR)", srresnet_x4, (3, 12, 12), (3, 48, 48), 4, "patch")]
    else:
        nets = [Network("resnet50", "ResNet50 (224^2)", resnet50, (3, 224, 224), (), 256, "img"),
                Network("srresnet16", "SRResNet x4 (96^2 HR)", srresnet_x4, (3, 24, 24), (3, 96, 96), 16, "patch"),
                Network("srresnet64", "SRResNet x4 (96^2 HR)", srresnet_x4, (3, 24, 24), (3, 96, 96), 64, "patch")]
    return [net for net in nets if net.key in keys]


def write_trace(step, device, path: Path, count: int = 3) -> None:
    """torch.profiler trace of ``count`` steps (Chrome JSON) and a table of the top ops by device
    time (``.txt``): where the time goes, per variant, on the device itself."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(count):
            step()
        synchronize(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path.with_suffix(".json")))
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.with_suffix(".txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=40))


# What each bench mode is for the training commands: the bench measures what --compile runs.
COMPILE_OF_MODE = {"eager": "off", "compile": "default", "compile-cudagraphs": "reduce-overhead"}


def random_batch(net: Network, device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of one batch of ``net`` (random: no data loading)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(net.batch, *net.input_shape, device=device).to(memory_format=memory_format)
    if net.target_shape:
        return x, torch.rand(net.batch, *net.target_shape, device=device)
    return x, torch.randint(0, 1000, (net.batch,), device=device)


def training_step(net: Network, attention: str, device, precision: str, channels_last: bool, mode: str):
    """``step(x, target)``: one training step (forward, backward, Adam) of a fresh
    ``net.build(attention)``, compiled as ``--compile COMPILE_OF_MODE[mode]`` compiles it."""
    from tasks.common.compile import begin_step, compile_for_training

    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = net.build(attention).to(device).to(memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    compile_mode = COMPILE_OF_MODE[mode]
    forward = compile_for_training(model, compile_mode, device)
    loss_of = F.mse_loss if net.target_shape else F.cross_entropy

    def step(x: torch.Tensor, target: torch.Tensor) -> None:
        begin_step(compile_mode, device)
        with autocast_for(device, precision):
            loss = loss_of(forward(x).float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_steps(step, samples: int, device, steps: int, warmup: int, repeats: int) -> tuple[list[float], float]:
    """(samples/s of each repeat of ``steps`` calls of ``step()``, seconds of the warm-up: the
    compilation, for a compiled step)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = clock()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(samples * steps / (clock() - start))
    return rates, warmup_s


def release_memory(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def step_throughput(net: Network, attention: str, device, precision: str, channels_last: bool,
                    mode: str, steps: int, warmup: int, repeats: int,
                    trace: Path | None = None) -> list[float]:
    """Samples/s of each repeat of ``steps`` full training steps (forward, backward, Adam)."""
    step = training_step(net, attention, device, precision, channels_last, mode)
    batch = random_batch(net, device, channels_last)
    rates, _ = time_steps(lambda: step(*batch), net.batch, device, steps, warmup, repeats)
    if trace is not None:
        write_trace(lambda: step(*batch), device, trace)
    del step
    release_memory(device)
    return rates


def steps_benchmark(args, device, precision, channels_last) -> list[tuple]:
    rows = []
    for net in networks(args.quick, args.networks):
        for mode in args.modes:
            rates = {}
            for variant in args.variants:
                attention = "none" if variant == "none" else "bam"
                trace = (args.trace / f"{net.key}-{mode}-{variant}") if args.trace else None
                with bam_variant(variant):
                    rates[variant] = median_spread(step_throughput(
                        net, attention, device, precision, channels_last, mode,
                        args.steps, args.warmup, args.repeats, trace))
            base = rates.get("none", (None,))[0]
            for variant, (rate, spread) in rates.items():
                extra = extra_text(base, rate) if base and variant != "none" else ""
                rows.append((net.name, net.batch, mode, variant, rate_text(rate, net.unit),
                             f"±{50 * spread:.0f}%", extra))
                print("steps", rows[-1], flush=True)
    return rows


# --- section: SR data pipeline ----------------------------------------------------------------

def sr_train_set(t91: Path, patch: int = 96):
    """T91 as the ``t91`` training preset reads it (decoded once, 20 visits per epoch)."""
    from tasks.data.sr import SRTrainFolder
    from tasks.sr.presets import get_preset

    preset = get_preset("t91")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # T91's 78x78 image is skipped with a warning
        return SRTrainFolder([t91], scale=preset["scale"], patch_size=patch, cache=preset["cache"],
                             repeat=preset["repeat"])


def sr_pipeline(t91: Path, batch: int, workers: int, steps: int, device, step, channels_last: bool,
                patch: int = 96) -> dict[str, float]:
    """Patches/s of: the dataset in this process (one worker's rate), the training loader alone
    (``tasks.common.run.training_loader``, as the training commands build it), ``step(lr, hr)``
    alone on one reused batch, and loader + step (end to end)."""
    from tasks.common.run import training_loader

    dataset = sr_train_set(t91, patch)
    result = {}
    count = max(4 * batch, 64)
    start = clock()
    for i in range(count):
        dataset[(i % len(dataset), i)]
    result["one process (dataset only)"] = count / (clock() - start)

    loader = training_loader(dataset, batch, seed=0, num_workers=workers)

    def batches():
        epoch = 0
        while True:
            loader.sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    stream = batches()
    for _ in range(max(3, workers)):  # every worker has started
        next(stream)
    start = time.perf_counter()
    for _ in range(steps):
        next(stream)
    result[f"DataLoader alone ({workers} workers)"] = batch * steps / (time.perf_counter() - start)

    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def train_on(sample):
        lr = sample["lr"].to(device, non_blocking=True).to(memory_format=memory_format)
        step(lr, sample["hr"].to(device, non_blocking=True))

    fixed = {k: v.to(device) for k, v in next(stream).items()}
    # Enough warm-up steps to use up the batches the workers prefetched (2 each, the DataLoader
    # default) while the step ran alone: end to end is then the steady state.
    warmup = 3 + 2 * workers
    for label, source in (("step only (one batch reused)", lambda: fixed),
                          ("end to end (loader + step)", lambda: next(stream))):
        for _ in range(warmup):
            train_on(source())
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            train_on(source())
        synchronize(device)
        result[label] = batch * steps / (time.perf_counter() - start)
    del loader, stream
    return result


# --- section: metrics -------------------------------------------------------------------------

def metrics_time(set_dir: Path, device, repeats: int = 3) -> dict[str, float]:
    """Median seconds to score a whole set: PSNR+SSIM (Y, BasicSR protocol) of bicubic x4
    outputs prepared beforehand, and the whole bicubic baseline (down, up, score)."""
    from tasks.data.imresize import imresize
    from tasks.data.sr import SRBenchmark
    from tasks.sr.metrics import bicubic_baseline, score_sr

    items = list(SRBenchmark(set_dir, scale=4))
    hrs = [(item["hr"] * 255).round().to(device)[None] for item in items]
    srs = [imresize(item["lr"][None].to(device), 4.0).clamp(0, 1) * 255 for item in items]
    jobs = {"PSNR+SSIM": lambda: [score_sr(sr, hr, 4) for sr, hr in zip(srs, hrs)],
            "bicubic down/up + PSNR+SSIM": lambda: [bicubic_baseline(hr, 4) for hr in hrs]}
    result = {"images": len(items)}
    for label, job in jobs.items():
        job()  # warm-up (resize matrices cached, kernels loaded)
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = clock()
            job()
            synchronize(device)
            times.append(clock() - start)
        result[label] = statistics.median(times)
    return result


# --- main -------------------------------------------------------------------------------------

def _list_arg(choices):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"unknown value(s) {bad or text!r}; choose from {list(choices)}")
        return values
    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (CPU smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-root", help="holds sr/Set14 and sr/train/T91 (default: $BAM_DATA_ROOT or ./data)")
    parser.add_argument("--only", type=_list_arg(SECTIONS), default=list(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--networks", type=_list_arg(NETWORKS), default=list(NETWORKS),
                        help="comma-separated networks for the steps section (default: all; --quick has "
                             "no srresnet64)")
    parser.add_argument("--variants", type=_list_arg(VARIANTS), default=None,
                        help="comma-separated step variants: none (base), bam (as shipped), bam-plain, "
                             "bam-fused, bam-fused-keep (default: none,bam,bam-fused)")
    parser.add_argument("--modes", type=_list_arg(MODES), default=None,
                        help="comma-separated: eager, compile, compile-cudagraphs (default: eager,compile)")
    parser.add_argument("--no-compile", action="store_true", help="eager only (same as --modes eager)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default=None,
                        help="autocast dtype (default: bf16 on a GPU, fp32 on a CPU)")
    parser.add_argument("--memory-format", choices=("channels_last", "contiguous"), default=None,
                        help="default: channels_last on a GPU, contiguous on a CPU")
    parser.add_argument("--steps", type=int, default=None, help="steps per repeat (default 20; quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats, median quoted (default 5; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5; quick 1)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers for the pipeline section (default: min(16, CPU cores))")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="timer of everything measured in this one process (not the DataLoader and "
                             "end-to-end figures): wall time, or this process's CPU time (steadier on a "
                             "shared CPU with OMP_NUM_THREADS=1; not for GPUs)")
    parser.add_argument("--trace", type=Path,
                        help="after each steps measurement, write a torch.profiler trace of 3 steps "
                             "(DIR/<network>-<mode>-<variant>.json) and its top ops (.txt)")
    parser.add_argument("--markdown", type=Path, help="append the result tables to this Markdown file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.steps = args.steps or (2 if quick else 20)
    args.repeats = args.repeats or (3 if quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 5)
    args.variants = args.variants or ["none", "bam", "bam-fused"]
    args.modes = ["eager"] if args.no_compile else (args.modes or ["eager", "compile"])
    args.workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    if min(args.steps, args.repeats) < 1 or args.warmup < 0 or args.workers < 0:
        parser.error("--steps and --repeats must be >= 1, --warmup and --workers >= 0")
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu only makes sense with --device cpu (GPU work is not CPU time)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    return args


def markdown_table(header: tuple, rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def configure_device(device: torch.device) -> None:
    """On a GPU, what every training run sets: cuDNN picks its kernels by benchmark, TF32 matmuls."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def main(argv: list[str] | None = None) -> None:
    from tasks.data.root import data_root

    global _CLOCK
    args = parse_args(argv)
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    precision = args.precision or ("bf16" if gpu else "fp32")
    channels_last = (args.memory_format or ("channels_last" if gpu else "contiguous")) == "channels_last"
    configure_device(device)
    settings = f"{precision} autocast" if precision != "fp32" else "fp32"
    settings += " + channels_last" if channels_last else ""
    settings += "; times are this process's CPU time" if args.clock == "cpu" else "; wall-clock times"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### {device_name(device)} — {stamp}{' (--quick)' if args.quick else ''}",
             f"torch {torch.__version__}; {settings}; command: `python benchmarks/bench.py "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}`", ""]

    if "module" in args.only:
        shape = (2, 64, 28, 28) if args.quick else (8, 256, 56, 56)
        rows = module_benchmark(shape, device, precision, channels_last, args.repeats, args.steps * 2)
        lines += [f"One BAM forward+backward on {'x'.join(map(str, shape))} (median of {args.repeats}; "
                  "aten ops = kernel launches at least; full-size = ops writing a map of that size):", ""]
        lines += markdown_table(("refinement", "fwd+bwd", "aten ops", "full-size ops", "peak extra memory"), rows)
        lines.append("")
    if "steps" in args.only:
        rows = steps_benchmark(args, device, precision, channels_last)
        lines += [f"Training steps (forward, backward, Adam): median of {args.repeats} x {args.steps} steps "
                  f"after {args.warmup} warm-up steps; ± is half the min-max spread; extra = step time "
                  "over the base network's in the same mode:", ""]
        lines += markdown_table(("network", "batch", "mode", "variant", "throughput", "spread", "extra step time"),
                                rows)
        lines.append("")
    root = data_root(args.data_root)
    notes = []
    t91, set14 = root / "sr" / "train" / "T91", root / "sr" / "Set14"
    if "pipeline" in args.only:
        if t91.is_dir():
            batch, patch = (4, 48) if args.quick else (16, 96)
            net = Network("srresnet16", "SRResNet x4", srresnet_x4, (3, patch // 4, patch // 4),
                          (3, patch, patch), batch, "patch")
            step = training_step(net, "bam", device, precision, channels_last, "eager")
            result = sr_pipeline(t91, batch, args.workers, args.steps * (2 if args.quick else 5), device,
                                 step, channels_last, patch)
            cores = os.cpu_count() or 1
            per_process = result["one process (dataset only)"]
            ratio = result["end to end (loader + step)"] / result["step only (one batch reused)"]
            notes.append(f"SR pipeline, SRResNet x4 + BAM, T91 (cache), {patch}^2 HR, batch {batch}: "
                         + "; ".join(f"{k} {v:,.0f} patch/s" for k, v in result.items())
                         + f"; **end to end / step only = {ratio:.0%}** (target >= 90%)"
                         + f"; {cores} cores x one process = {cores * per_process:,.0f} patch/s")
        else:
            notes.append(f"SR pipeline skipped: {t91} not found")
    if "metrics" in args.only:
        if set14.is_dir():
            result = metrics_time(set14, device)
            notes.append(f"Set14 ({result['images']} images) on {device.type}: PSNR+SSIM (Y) "
                         f"{result['PSNR+SSIM']:.3f} s; bicubic down/up + PSNR+SSIM "
                         f"{result['bicubic down/up + PSNR+SSIM']:.3f} s")
        else:
            notes.append(f"Set14 metrics skipped: {set14} not found")
    lines += [f"- {note}" for note in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
