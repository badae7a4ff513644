"""BAM's cost in wall time, base and +BAM measured in the same run (issue: performance).

Measures, with and without BAM:
  * training-step throughput of ResNet50 (ImageNet-sized) and SRResNet x4 (batch 16 and 64),
    eager and compiled, with the repository's default settings (bf16 autocast + channels_last on
    a GPU; fp32 on a CPU), as the median of several repeats;
  * end-to-end SR training throughput (data loading, MATLAB-bicubic LR generation, the step)
    against the step alone;
  * PSNR/SSIM of a whole benchmark set (Set14) on the device.

    python benchmarks/bench.py                 # full sizes on a GPU
    python benchmarks/bench.py --quick         # small sizes, minutes on a CPU
    python benchmarks/bench.py --markdown benchmarks/RESULTS.md   # append the table there

Figures are only comparable within one run on one card: the table names the device.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Case:
    name: str
    batch: int
    unit: str  # what one sample is ("img", "patch")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_resnet50(attention: str) -> tuple[nn.Module, tuple[int, ...], tuple[int, ...]]:
    import torchvision

    import bam

    model = torchvision.models.resnet50()
    bam.attach_attention(model, attention, input_size=(3, 224, 224))
    return model, (3, 224, 224), ()


def build_srresnet(attention: str) -> tuple[nn.Module, tuple[int, ...], tuple[int, ...]]:
    from tasks.sr.model import srresnet

    return srresnet(scale=4, attention=attention), (3, 24, 24), (3, 96, 96)


def step_throughput(model: nn.Module, input_shape, target_shape, batch: int, device: torch.device,
                    amp: bool, channels_last: bool, compiled: bool, steps: int, warmup: int,
                    repeats: int) -> float:
    """Median samples/s of full training steps (forward, backward, Adam update)."""
    model = model.to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, *input_shape, device=device).to(memory_format=memory_format)
    if target_shape:
        target = torch.randn(batch, *target_shape, device=device)
        loss_of = lambda out: F.mse_loss(out.float(), target)  # noqa: E731
    else:
        target = torch.randint(0, 1000, (batch,), device=device)
        loss_of = lambda out: F.cross_entropy(out.float(), target)  # noqa: E731
    forward = torch.compile(model) if compiled else model
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext())

    def step():
        with autocast:
            loss = loss_of(forward(x))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(batch * steps / (time.perf_counter() - start))
    return statistics.median(rates)


def sr_pipeline_throughput(data_dir: Path, batch: int, workers: int, steps: int, device: torch.device,
                           amp: bool, channels_last: bool, attention: str) -> tuple[float, float]:
    """(end-to-end patches/s, loader-only patches/s) of SR training on a real image folder."""
    from torch.utils.data import DataLoader

    from datasets.sr import SRTrainFolder
    from tasks.common.sampling import EpochSeededSampler
    from tasks.sr.model import srresnet

    dataset = SRTrainFolder([data_dir], scale=4, patch_size=96, cache=True)
    sampler = EpochSeededSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0)

    def batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    stream = batches()
    for _ in range(3):
        next(stream)
    start = time.perf_counter()
    for _ in range(steps):
        next(stream)
    loader_rate = batch * steps / (time.perf_counter() - start)

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = srresnet(scale=4, attention=attention).to(device).to(memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext())

    def step(sample):
        lr = sample["lr"].to(device, non_blocking=True).to(memory_format=memory_format)
        hr = sample["hr"].to(device, non_blocking=True)
        with autocast:
            loss = F.mse_loss(model(lr).float(), hr)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step(next(stream))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(next(stream))
    synchronize(device)
    return batch * steps / (time.perf_counter() - start), loader_rate


def metrics_time(set_dir: Path, device: torch.device, repeats: int = 3) -> tuple[float, int]:
    """Median seconds to score bicubic x4 on every image of a benchmark set (PSNR + SSIM, Y)."""
    from datasets.sr import SRBenchmark
    from tasks.sr.metrics import bicubic_baseline

    images = [item["hr"] for item in SRBenchmark(set_dir, scale=4)]
    images = [(image * 255).round().to(device) if image.is_floating_point() else image.to(device)
              for image in images]
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for hr in images:
            bicubic_baseline(hr[None] if hr.dim() == 3 else hr, 4)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(images)


def main(argv: list[str] | None = None) -> None:
    from datasets.root import data_root

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small batches and few steps (CPU smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-root", help="holds sr/Set14 and sr/train/T91 (default: $BAM_DATA_ROOT or ./data)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    parser.add_argument("--workers", type=int, default=8, help="data loader workers for the pipeline test")
    parser.add_argument("--markdown", type=Path, help="append the result table to this Markdown file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    amp, channels_last = gpu, gpu  # the repository's default training settings on each device
    steps, warmup, repeats = (3, 1, 3) if args.quick else (20, 5, 5)
    cases = ([("resnet50", build_resnet50, Case("ResNet50", 256 if not args.quick else 4, "img"))]
             + [("srresnet", build_srresnet, Case(f"SRResNet x4 (batch {b})", b if not args.quick else 4, "patch"))
                for b in ((16, 64) if not args.quick else (16,))])
    rows = []
    modes = [False] + ([] if args.no_compile else [True])
    for _, builder, case in cases:
        for compiled in modes:
            rates = {}
            for attention in ("none", "bam"):
                torch.manual_seed(0)
                model, input_shape, target_shape = builder(attention)
                rates[attention] = step_throughput(model, input_shape, target_shape, case.batch, device, amp,
                                                   channels_last, compiled, steps, warmup, repeats)
                del model
                if gpu:
                    torch.cuda.empty_cache()
            overhead = 100 * (rates["none"] / rates["bam"] - 1)  # extra step time with BAM
            rows.append((case.name, case.batch, "compiled" if compiled else "eager",
                         f"{rates['none']:,.0f} {case.unit}/s", f"{rates['bam']:,.0f} {case.unit}/s",
                         f"+{overhead:.1f}%"))
            print(rows[-1], flush=True)

    root = data_root(args.data_root)
    extra = []
    t91 = root / "sr" / "train" / "T91"
    if t91.is_dir():
        batch = 4 if args.quick else 16
        end_to_end, loader_only = sr_pipeline_throughput(t91, batch, args.workers if not args.quick else 2,
                                                         steps * (1 if args.quick else 5), device, amp,
                                                         channels_last, "bam")
        extra.append(f"SR training end to end (T91, batch {batch}, {args.workers} workers, +BAM): "
                     f"{end_to_end:,.0f} patch/s; loader alone {loader_only:,.0f} patch/s")
    set14 = root / "sr" / "Set14"
    if set14.is_dir():
        seconds, count = metrics_time(set14, device)
        extra.append(f"Set14 bicubic x4 scored (MATLAB bicubic down+up, PSNR+SSIM on Y, {count} images): "
                     f"{seconds:.3f} s")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### {device_name(device)} — {stamp}{' (--quick)' if args.quick else ''}",
             f"torch {torch.__version__}; {'bf16 autocast + channels_last' if amp else 'fp32'}; "
             f"median of {repeats} x {steps} steps after {warmup} warm-up steps; Adam; batch as listed.", "",
             "| network | batch | mode | base | +BAM | BAM extra step time |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines += [""] + [f"- {line}" for line in extra]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
