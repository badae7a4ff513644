"""What BAM costs in time: networks without and with BAM, measured in one process, taking turns.

One line per measurement: ``module``, ``metrics``, ``data`` and ``step`` (forward, loss, backward,
optimiser; base and BAM, eager, then compiled); benchmarks/README.md says what each measures. Times
are medians of --repeats runs of --steps calls.

    python benchmarks/bench.py                       # CPU sizes (ResNet50: batch 8, 128x128)
    python benchmarks/bench.py --device cuda         # GPU sizes (ResNet50: batch 256, bf16)
    python benchmarks/bench.py --tiny --modes eager  # every code path in seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bam and tasks

import bam

# network: (batch, input side, HR side (0: ImageNet classes), autocast dtype, channels_last)
# srresnet-main in the main job's layout (channels_last: 11% faster there on one thread)
SR = {"srresnet-main": (4, 12, 48, None, True), "srresnet-srgan": (16, 24, 96, None, False)}
SIZES = {"cpu": {**SR, "resnet50": (8, 128, 0, None, False)},
         "cuda": {**SR, "srresnet-b64": (64, 24, 96, torch.bfloat16, True),
                  "resnet50": (256, 224, 0, torch.bfloat16, True)},
         "tiny": {"srresnet-main": (2, 8, 32, None, True), "resnet50": (2, 32, 0, None, False)}}


def build(network: str, attention: str, tiny: bool) -> torch.nn.Module:
    if network.startswith("srresnet"):
        from tasks.sr.model import srresnet
        return srresnet(scale=4, num_blocks=4 if tiny else 16, attention=attention)
    import torchvision
    model = torchvision.models.resnet50()
    bam.attach_attention(model, attention, input_size=(3, 64, 64))
    return model


def plain_bam(module: bam.BAM):
    """``x + x * sigmoid(Mc + Ms)`` as plain tensor ops on ``module``'s own layers."""
    gate = module.channel

    def forward(x):
        mc = gate.bn(gate.fc2(gate.act(gate.bn1(gate.fc1(x.mean(dim=(2, 3)))))))[:, :, None, None]
        return x + x * torch.sigmoid(mc + module.spatial(x))
    return forward


def compare(fns: dict, device, steps: int, repeats: int) -> tuple[dict, dict]:
    """(median seconds per call, seconds of the first call) of each function, taking turns."""
    def seconds(fn, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / calls

    first = {name: seconds(fn, 1) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for repeat in range(repeats):
        for name in list(fns) if repeat % 2 == 0 else list(fns)[::-1]:
            times[name].append(seconds(fns[name], steps))
    return {name: statistics.median(t) for name, t in times.items()}, first


def training_step(network, attention, size, device, tiny, compiled):
    from tasks.classify import recipes
    from tasks.common.compile import compile_for_training  # honours BAM_COMPILE_BACKEND

    batch, side, hr_side, dtype, channels_last = size
    layout = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build(network, attention, tiny).to(device, memory_format=layout).train()
    forward = compile_for_training(model, "default" if compiled else "off", device)
    # the optimiser the training command builds: fused, one kernel for every tensor
    optimizer = (torch.optim.Adam(model.parameters(), lr=1e-4, fused=True) if hr_side else
                 recipes.build_optimizer(model.parameters(), recipes.RECIPES["imagenet"]))
    x = torch.rand(batch, 3, side, side, device=device).to(memory_format=layout)
    target = torch.rand(batch, 3, hr_side, hr_side) if hr_side else torch.randint(1000, (batch,))
    target, loss_of = target.to(device), F.l1_loss if hr_side else F.cross_entropy

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_of(forward(x).float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def module_lines(device, shapes, steps, repeats) -> None:
    names = ("plain", "bam", "se", "cbam")
    for shape, dtype in shapes:
        torch.manual_seed(0)
        modules = {name: bam.create_attention(name, shape[1]).to(device).train()
                   for name in names[1:]}
        modules["plain"] = plain_bam(modules["bam"])
        x = torch.randn(shape, device=device, dtype=dtype or torch.float32, requires_grad=True)
        grad = torch.randn_like(x)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            times, _ = compare({name: (lambda m=m: m(x).backward(grad))
                                for name, m in modules.items()}, device, steps, repeats)
        print(f"module  {'x'.join(map(str, shape)):>15}  "
              + "  ".join(f"{name} {times[name] * 1e3:8.3f} ms" for name in names))


def metrics_line(root: Path, device) -> None:
    from tasks.data.imresize import imresize
    from tasks.data.sr import SRBenchmark
    from tasks.sr.metrics import score_sr

    items = list(SRBenchmark(root / "sr" / "Set14", scale=4))
    pairs = [(imresize(i["lr"][None].to(device), 4.0).clamp(0, 1), i["hr"][None].to(device))
             for i in items]
    score = lambda: [score_sr(sr, hr, 4, value_range=1.0) for sr, hr in pairs]  # noqa: E731
    seconds = compare({"set14": score}, device, 1, 3)[0]["set14"]
    print(f"metrics  Set14 ({len(items)} images) PSNR+SSIM on {device.type}  {seconds:.3f} s")


def data_lines(root: Path, hr_side: int, batch: int, workers: int, batches: int) -> None:
    from tasks.data.sr import SRTrainFolder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # T91's images smaller than the crop are skipped
        data = SRTrainFolder(root / "sr" / "train" / "T91", scale=4, patch_size=hr_side, cache=True,
                             repeat=20)
    loader = iter(torch.utils.data.DataLoader(data, batch, shuffle=True, num_workers=workers,
                                              drop_last=True))
    next(loader)  # the workers have started
    in_process = lambda i: [data[(i * batch + j) % len(data)] for j in range(batch)]  # noqa: E731
    for label, next_batch in (("one process", in_process),
                              (f"DataLoader, {workers} workers", lambda i: next(loader))):
        start = time.perf_counter()
        for i in range(batches):
            next_batch(i)
        rate = batches * batch / (time.perf_counter() - start)
        print(f"data  T91 {hr_side}x{hr_side} crops, batch {batch:3}  {label:22}  "
              f"{rate:8.0f} patch/s")


def machine(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "CPU")
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def main(argv=None) -> None:
    from tasks.data.root import data_root
    from tasks.utils.processes import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--device", default="cpu", help="cpu (CPU sizes) or cuda (GPU sizes)")
    add("--tiny", action="store_true", help="tiny sizes: every code path in seconds")
    add("--modes", default="eager,compile", help="eager and/or compile (default: both)")
    add("--only", default="module,metrics,data,step", help="sections to run (default: all)")
    add("--steps", type=int, help="calls per timing (default: GPU 10, CPU 3, tiny 2)")
    add("--repeats", type=int, help="timings per variant (default: GPU 7, CPU 5, tiny 2)")
    add("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    add("--data-root", help="holds sr/train/T91 and sr/Set14 (default: as the training commands)")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # each line as soon as it is measured
    device, only = torch.device(args.device), args.only.split(",")
    steps, repeats = (2, 2) if args.tiny else (10, 7) if device.type == "cuda" else (3, 5)
    steps, repeats = args.steps or steps, args.repeats or repeats
    sizes = SIZES["tiny" if args.tiny else device.type]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the training commands set it
    else:
        keep_freed_memory()  # as the training commands do on a CPU
    print(f"{machine(device)}; torch {torch.__version__}; "
          f"{'tiny' if args.tiny else device.type} sizes")
    root = data_root(args.data_root)
    if "module" in only:  # the SR shapes, then ResNet50's BAMs after its stages 1-3
        shapes = [((size[0], 64, size[1], size[1]), size[3])
                  for name, size in sizes.items() if name in SR]
        batch, side, _, dtype, _ = sizes["resnet50"]
        shapes += [((batch, 256 << i, side // 4 >> i, side // 4 >> i), dtype) for i in range(3)]
        module_lines(device, shapes, steps, repeats)
    if "metrics" in only:
        metrics_line(root, device)
    for network, (batch, _, hr_side, _, _) in sizes.items() if "data" in only else []:
        if hr_side:
            data_lines(root, hr_side, batch, args.workers, batches=5 * steps)
    for mode in args.modes.split(",") if "step" in only else []:
        for network, size in sizes.items():
            times, first = compare(
                {attention: training_step(network, attention, size, device, args.tiny,
                                          mode == "compile")
                 for attention in ("none", "bam")}, device, steps, repeats)
            overhead = f"{100 * (times['bam'] / times['none'] - 1):+6.1f}%"
            for attention, label, extra in (("none", "base", ""), ("bam", "bam", overhead)):
                print(f"step  {network:15} batch {size[0]:3} {size[1]:3}x{size[1]:<3}  {mode:7}  "
                      f"{label:4}  {times[attention] * 1e3:9.2f} ms  {extra:7}  "
                      f"(first step {first[attention]:.1f} s)")


if __name__ == "__main__":
    main()
