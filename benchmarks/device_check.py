"""Issue 7's targets in one short run on one GPU: BAM's cost, base and BAM in this one process.

    benchmarks/device_check.sh OUTPUT_DIR                  # one H100/H200: about 5-6 minutes
    benchmarks/device_check.sh OUTPUT_DIR --tiny           # a CPU, tiny sizes, the same code paths (CI)

It writes Markdown into OUTPUT_DIR: ``steps.md`` (training-step throughput, base and +BAM per
mode), ``pipeline.md`` (SR training on T91 with the real loader against the step alone),
``metrics.md`` (Set14 PSNR/SSIM on the device) and ``summary.md`` (every target PASS, FAIL or
NOT MEASURED, with its figures and the card), plus ``results.json``. Every file is rewritten after
each measurement, so a run stopped by its time limit keeps what it measured.

What it measures, and why that fits in 7 minutes (the full ``bench.py`` takes 15-25, most of it
compiling every variant in every mode):

* each network only in the modes that can be its best: ResNet50 at batch 256 eager and compiled
  (compute-bound: CUDA graphs would save little), SRResNet x4 eager and compiled with CUDA graphs
  (``--compile reduce-overhead``; small batches are bound by kernel launches), and only the
  module as shipped (``bam``) against the base (``none``): six compilations in all, about 4
  minutes on a cold cache, base first so that BAM's compilation reuses the kernels they share;
* SRResNet at batch 16 in fp32 (the training recipe, the issue's 823 -> 426 figure) and at
  batch 64 in bf16 + channels_last (the issue's 2,548 -> 1,578 figure); ResNet50 in bf16 +
  channels_last;
* the pipeline reuses the fastest +BAM step already built (no compilation of its own);
* 5 repeats of 20 steps (10 for ResNet50) after 3 warm-up steps (5 when compiled: CUDA graphs
  warm up, record, then replay), median quoted: a few seconds per variant;
* cheap measurements first (all eager ones, then Set14), compiled ones after, the longest
  compilation (ResNet50) first; a measurement whose predicted time no longer fits ``--budget-s``
  is skipped and its targets say NOT MEASURED.

``--tiny`` runs the same plan at tiny sizes (ResNet50 on 32^2, a 4-block SRResNet) for a CPU;
its verdicts say nothing about the targets. Nothing here imports wandb.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(HERE), str(REPO)):  # bench.py beside it; this checkout's packages, not an installed copy
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

import bench  # noqa: E402
from tasks.utils.files import write_text_atomic  # noqa: E402

COMPILED_WARMUP = 5  # CUDA graph trees: one eager warm-up run, one recording, then replays


@dataclass(frozen=True)
class Sizes:
    """How much is measured: the GPU sizes of the targets, or tiny ones for a CPU."""

    resnet: tuple[int, int]  # batch, image size
    sr_batches: tuple[int, int]  # the targets' batch 16 and batch 64
    sr_patch: int  # HR patch
    sr_blocks: int
    steps: int
    repeats: int
    warmup: int
    pipeline_steps: int
    metric_repeats: int


GPU_SIZES = Sizes(resnet=(256, 224), sr_batches=(16, 64), sr_patch=96, sr_blocks=16, steps=20, repeats=5,
                  warmup=3, pipeline_steps=60, metric_repeats=3)
TINY_SIZES = Sizes(resnet=(2, 32), sr_batches=(2, 4), sr_patch=32, sr_blocks=4, steps=1, repeats=2,
                   warmup=1, pipeline_steps=3, metric_repeats=1)


@dataclass(frozen=True)
class Job:
    """One network at one batch and precision, measured base and +BAM in each of ``modes``."""

    key: str
    net: bench.Network
    precision: str
    channels_last: bool
    modes: tuple[str, ...]
    compile_guess_s: float  # one cold compilation on an H100 machine, before one has been seen
    steps: int  # per repeat
    pipeline: bool = False  # also SR training end to end with +BAM's fastest step

    @property
    def title(self) -> str:
        layout = " + channels_last" if self.channels_last else ""
        return f"{self.net.name}, batch {self.net.batch}, {self.precision}{layout}"


def _srresnet_builder(blocks: int):
    def build(attention: str):
        from tasks.sr.model import srresnet

        return srresnet(scale=4, num_blocks=blocks, attention=attention)
    return build


def plan(sizes: Sizes) -> list[Job]:
    batch, size = sizes.resnet
    resnet = bench.Network("resnet50", f"ResNet50 ({size}^2)", bench.resnet50, (3, size, size), (), batch, "img")
    patch, lr = sizes.sr_patch, sizes.sr_patch // 4
    sr_name = f"SRResNet x4 ({patch}^2 HR)" + ("" if sizes.sr_blocks == 16 else f", {sizes.sr_blocks} blocks")

    def sr(sr_batch: int) -> bench.Network:
        return bench.Network(f"srresnet{sr_batch}", sr_name, _srresnet_builder(sizes.sr_blocks), (3, lr, lr),
                             (3, patch, patch), sr_batch, "patch")

    small, large = sizes.sr_batches
    cudagraphs = ("eager", "compile-cudagraphs")
    # ResNet50's large steps are steady (compute-bound): half as many per repeat, ~0.5 s compiled.
    return [Job("sr16", sr(small), "fp32", False, cudagraphs, 35.0, sizes.steps, pipeline=True),
            Job("sr64", sr(large), "bf16", True, cudagraphs, 35.0, sizes.steps, pipeline=True),
            Job("resnet50", resnet, "bf16", True, ("eager", "compile"), 60.0, max(1, sizes.steps // 2))]


# --- measuring -------------------------------------------------------------------------------

class Budget:
    """Seconds left for this check; predictions of compile time learn from the compilations seen."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, time.perf_counter()
        self.calibration = 1.0  # seen / guessed compile time

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, predicted_s: float) -> bool:
        return self.elapsed() + predicted_s <= self.seconds

    def predict_compiled(self, job: "Job") -> float:
        """Seconds for base and +BAM compiled, warmed up and measured."""
        return 2 * job.compile_guess_s * self.calibration + 20

    def learn(self, job: "Job", seen_s: float) -> None:
        self.calibration = max(seen_s / (2 * job.compile_guess_s), 0.05)


def compile_counters() -> dict[str, int]:
    """Dynamo/Inductor's process-wide counters that say whether a compiled step is what it should be."""
    from torch._dynamo.utils import counters

    return {"graphs": counters["stats"]["unique_graphs"], "graph breaks": sum(counters["graph_break"].values()),
            "CUDA-graph skips": counters["inductor"]["cudagraph_skips"]}


@dataclass
class Measurement:
    """One job in one mode: per variant (``none``, ``bam``) the median rate, spread, warm-up seconds."""

    job: str
    mode: str
    rates: dict[str, float] = field(default_factory=dict)
    spreads: dict[str, float] = field(default_factory=dict)
    warmup_s: dict[str, float] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)


def measure(job: Job, mode: str, device, sizes: Sizes, keep: dict) -> Measurement:
    """Base then +BAM in ``mode``; the +BAM step is kept in ``keep[(job, mode)]`` for the pipeline."""
    result = Measurement(job.key, mode)
    warmup = sizes.warmup if mode == "eager" else max(sizes.warmup, COMPILED_WARMUP)
    for variant in ("none", "bam"):
        before = compile_counters()
        step = bench.training_step(job.net, variant, device, job.precision, job.channels_last, mode)
        batch = bench.random_batch(job.net, device, job.channels_last)
        rates, result.warmup_s[variant] = bench.time_steps(lambda: step(*batch), job.net.batch, device,
                                                           job.steps, warmup, sizes.repeats)
        result.rates[variant], result.spreads[variant] = bench.median_spread(rates)
        if mode != "eager":
            after = compile_counters()
            result.counters[variant] = {name: after[name] - before[name] for name in after}
        if variant == "bam" and job.pipeline:
            keep[(job.key, mode)] = step
        del step, batch
        bench.release_memory(device)
        print(f"steps {job.key} {mode} {variant}: {bench.rate_text(result.rates[variant], job.net.unit)} "
              f"(warm-up {result.warmup_s[variant]:.1f} s)", flush=True)
    return result


def best(measurements: list[Measurement], job: str, variant: str) -> tuple[float, str] | None:
    """(rate, mode) of the fastest mode measured for ``variant`` of ``job``."""
    seen = [(m.rates[variant], m.mode) for m in measurements if m.job == job and variant in m.rates]
    return max(seen) if seen else None


# --- targets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str
    text: str


TARGETS = (
    Target("resnet50-extra", "ResNet50 (batch 256, 224^2, bf16, channels_last): BAM's extra step time <= 5%"),
    Target("sr16-extra", "SRResNet x4 (batch 16, 96^2 HR, fp32): BAM's extra step time <= 10%"),
    Target("sr64-extra", "SRResNet x4 (batch 64, 96^2 HR, bf16, channels_last): BAM's extra step time <= 10%"),
    Target("resnet50-rate", "ResNet50+BAM >= 5,370 img/s"),
    Target("sr64-rate", "SRResNet+BAM >= 2,320 patch/s at batch 64"),
    Target("sr16-rate", "SRResNet+BAM >= 750 patch/s at batch 16"),
    Target("sr16-pipeline", "SR end to end (T91, real loader), batch 16: >= 90% of the step-only rate"),
    Target("sr64-pipeline", "SR end to end (T91, real loader), batch 64: >= 90% of the step-only rate"),
    Target("set14-metrics", "Set14 PSNR/SSIM on the device well under 1 s (here: < 0.5 s)"),
)
EXTRA_LIMITS = {"resnet50": 0.05, "sr16": 0.10, "sr64": 0.10}
RATE_LIMITS = {"resnet50": 5370.0, "sr16": 750.0, "sr64": 2320.0}
PIPELINE_LIMIT, METRICS_LIMIT_S = 0.90, 0.5


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def extra_verdict(job: Job, measurements) -> tuple[str, str]:
    base, bam = best(measurements, job.key, "none"), best(measurements, job.key, "bam")
    if base is None or bam is None:
        return "-", "NOT MEASURED"
    extra = base[0] / bam[0] - 1
    unit = job.net.unit
    figure = (f"{extra:+.1%} (base {bench.rate_text(base[0], unit)} {base[1]}, +BAM "
              f"{bench.rate_text(bam[0], unit)} {bam[1]}: best mode each)")
    return figure, _verdict(extra <= EXTRA_LIMITS[job.key])


def rate_verdict(job: Job, measurements) -> tuple[str, str]:
    bam = best(measurements, job.key, "bam")
    if bam is None:
        return "-", "NOT MEASURED"
    return f"{bench.rate_text(bam[0], job.net.unit)} ({bam[1]})", _verdict(bam[0] >= RATE_LIMITS[job.key])


def end_to_end_ratio(result: dict) -> float:
    return result["end to end (loader + step)"] / result["step only (one batch reused)"]


def pipeline_verdict(result: dict | None) -> tuple[str, str]:
    if not result:
        return "-", "NOT MEASURED"
    ratio = end_to_end_ratio(result)
    figure = (f"{ratio:.0%} (end to end {result['end to end (loader + step)']:,.0f} patch/s, step only "
              f"{result['step only (one batch reused)']:,.0f} patch/s, {result['mode']})")
    return figure, _verdict(ratio >= PIPELINE_LIMIT)


def metrics_verdict(result: dict | None) -> tuple[str, str]:
    if not result:
        return "-", "NOT MEASURED"
    return f"{result['PSNR+SSIM']:.3f} s", _verdict(result["PSNR+SSIM"] < METRICS_LIMIT_S)


def verdicts(jobs: list[Job], state: "State") -> list[tuple[str, str, str]]:
    """(target text, figure, verdict) for every target, in TARGETS' order."""
    by_key = {job.key: job for job in jobs}
    found = {}
    for key in EXTRA_LIMITS:
        job = by_key.get(key)
        found[f"{key}-extra"] = extra_verdict(job, state.steps) if job else ("-", "NOT MEASURED")
        found[f"{key}-rate"] = rate_verdict(job, state.steps) if job else ("-", "NOT MEASURED")
    for key in ("sr16", "sr64"):
        found[f"{key}-pipeline"] = pipeline_verdict(state.pipeline.get(key))
    found["set14-metrics"] = metrics_verdict(state.metrics)
    return [(target.text, *found[target.name]) for target in TARGETS]


# --- writing ---------------------------------------------------------------------------------

@dataclass
class State:
    """Everything measured so far, and what was skipped."""

    header: list[str]
    steps: list[Measurement] = field(default_factory=list)
    pipeline: dict[str, dict] = field(default_factory=dict)
    metrics: dict | None = None
    sections_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def steps_markdown(jobs: list[Job], state: State) -> list[str]:
    by_key = {job.key: job for job in jobs}
    rows = []
    for m in state.steps:
        job = by_key[m.job]
        unit = job.net.unit
        extra = bench.extra_text(m.rates["none"], m.rates["bam"]) if len(m.rates) == 2 else ""
        counters = "; ".join(f"{v}: " + ", ".join(f"{k} {n}" for k, n in c.items()) for v, c in m.counters.items())
        rows.append((job.title, m.mode, *(f"{bench.rate_text(m.rates[v], unit)} (±{50 * m.spreads[v]:.0f}%)"
                                            for v in ("none", "bam")), extra,
                     " / ".join(f"{m.warmup_s[v]:.1f}" for v in ("none", "bam")), counters or "-"))
    return ["Training steps (forward, backward, Adam; random inputs): median of repeats, ± half the "
            "min-max spread; extra = +BAM's step time over the base's in the same mode:", "",
            *bench.markdown_table(("network", "mode", "base", "+BAM", "extra step time", "warm-up s (base / +BAM)",
                                   "compiled: new graphs, graph breaks, CUDA-graph skips"), rows)]


def pipeline_markdown(state: State) -> list[str]:
    lines = ["SR training on T91 (t91 preset: cached, 20 visits per epoch, MATLAB-bicubic LR in the workers; "
             "`tasks.common.run.training_loader`) with SRResNet x4 + BAM's fastest step:", ""]
    for key, result in state.pipeline.items():
        figures = "; ".join(f"{k} {v:,.0f} patch/s" for k, v in result.items() if isinstance(v, float))
        lines.append(f"- {key} ({result['mode']}): {figures}; **end to end / step only = "
                     f"{end_to_end_ratio(result):.0%}**")
    return lines


def metrics_markdown(state: State) -> list[str]:
    result = state.metrics
    if not result:
        return ["Set14 metrics not measured."]
    return [f"Set14 ({result['images']} images) on the device, median of {result['repeats']}: PSNR+SSIM (Y, "
            f"BasicSR protocol) {result['PSNR+SSIM']:.3f} s; bicubic down/up + PSNR+SSIM "
            f"{result['bicubic down/up + PSNR+SSIM']:.3f} s"]


def summary_markdown(jobs: list[Job], state: State, total_s: float) -> list[str]:
    rows = verdicts(jobs, state)
    timing = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in state.sections_s.items())
    return [f"Elapsed: {total_s:.0f} s ({timing or 'nothing finished yet'}).", "",
            *bench.markdown_table(("target (issue 7)", "measured", "verdict"), rows), "",
            *[f"- {note}" for note in state.notes]]


def write_all(out: Path, jobs: list[Job], state: State, budget: Budget) -> None:
    files = {"steps.md": steps_markdown(jobs, state), "pipeline.md": pipeline_markdown(state),
             "metrics.md": metrics_markdown(state), "summary.md": summary_markdown(jobs, state, budget.elapsed())}
    # Atomic: the time limit's SIGKILL may come at any moment, and leaves the previous version.
    for name, lines in files.items():
        write_text_atomic(out / name, "\n".join([*state.header, *lines]) + "\n")
    record = {"steps": [asdict(m) for m in state.steps], "pipeline": state.pipeline, "metrics": state.metrics,
              "sections_s": state.sections_s, "notes": state.notes,
              "targets": [dict(zip(("target", "measured", "verdict"), row)) for row in verdicts(jobs, state)]}
    write_text_atomic(out / "results.json", json.dumps(record, indent=1) + "\n")


# --- the run ---------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="folder for the Markdown tables (created)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes for a CPU (CI): same code paths")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-root", help="holds sr/Set14 and sr/train/T91 (default: $BAM_DATA_ROOT, else the "
                                            "repository's datasets/)")
    parser.add_argument("--jobs", default="sr16,sr64,resnet50",
                        help="comma-separated subset of sr16, sr64, resnet50 (default: all)")
    parser.add_argument("--eager-only", action="store_true", help="skip the compiled modes")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="loader workers of the pipeline (default: the training commands' --num-workers)")
    parser.add_argument("--budget-s", type=float, default=390.0,
                        help="skip measurements predicted to end later than this (default: %(default)s s, so that "
                             "the whole command, start-up included, ends within 7 minutes)")
    args = parser.parse_args(argv)
    args.jobs = [key.strip() for key in args.jobs.split(",") if key.strip()]
    if not args.jobs or set(args.jobs) - {"sr16", "sr64", "resnet50"}:
        parser.error(f"--jobs: choose from sr16, sr64, resnet50, got {','.join(args.jobs) or 'nothing'}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    return args


def header_lines(device, args, argv) -> list[str]:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    command = " ".join(argv if argv is not None else sys.argv[1:])
    return [f"### Device check: {bench.device_name(device)} — {stamp}{' (--tiny)' if args.tiny else ''}",
            f"torch {torch.__version__}{cuda}; {os.cpu_count()} CPU cores; command: "
            f"`benchmarks/device_check.sh {command}`", ""]


class DeviceCheck:
    """The run: eager steps of every job, Set14, then per job its compiled modes and its pipeline.
    Every file in ``out`` is rewritten after each measurement."""

    def __init__(self, args, argv) -> None:
        from tasks.data.root import data_root

        self.device = torch.device(args.device)
        self.sizes = TINY_SIZES if args.tiny else GPU_SIZES
        if args.tiny and self.device.type == "cpu":
            # CI machines are shared: two OpenMP threads on a busy 2-core machine stall at every
            # barrier (a 0.3 s tiny ResNet50 step took 1.4-14 s); one thread never waits for another.
            torch.set_num_threads(1)
        self.jobs = [job for job in plan(self.sizes) if job.key in args.jobs]
        self.compiled = not args.eager_only
        root = data_root(args.data_root)
        self.t91, self.set14, self.workers = root / "sr" / "train" / "T91", root / "sr" / "Set14", args.workers
        self.out = args.output_dir
        self.state = State(header_lines(self.device, args, argv))
        if args.tiny:
            self.state.notes.append("tiny sizes: the verdicts say nothing about the targets")
        self.budget = Budget(args.budget_s)
        self.kept: dict[tuple[str, str], object] = {}  # (job, mode) -> +BAM step, for the pipeline
        self._section = ("", 0.0)
        self.interrupted = self.failed = False

    def run(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        bench.configure_device(self.device)
        try:
            self.section("eager steps")
            for job in self.jobs:
                self.attempt(f"{job.key} eager", self.steps, job, "eager")
            self.section("Set14 metrics")
            self.attempt("Set14 metrics", self.metrics)
            self.section("compiled steps and pipeline" if self.compiled else "pipeline")
            # The longest compilation first, while the budget is whole: the shorter ones, predicted
            # from what it took, fit around it or are skipped.
            for job in sorted(self.jobs, key=lambda job: -job.compile_guess_s):
                for mode in (m for m in job.modes if m != "eager" and self.compiled):
                    self.attempt(f"{job.key} {mode}", self.steps, job, mode)
                if job.pipeline:
                    self.attempt(f"{job.key} pipeline", self.pipeline, job)
        except KeyboardInterrupt:  # device_check.sh's time limit: keep what was measured
            self.interrupted = True
            self.state.notes.append(f"interrupted at {self.budget.elapsed():.0f} s (time limit): later "
                                    "measurements are missing")
        finally:
            self.save()

    def attempt(self, label: str, measurement, *args) -> None:
        """Run one measurement; if it fails (a first run on a new card or torch version), say so in
        the summary, print the traceback, and go on with the others."""
        try:
            measurement(*args)
        except Exception as error:  # noqa: BLE001 - any failure of one measurement, not of the check
            traceback.print_exc()
            self.failed = True
            message = " ".join(str(error).split())[:300]
            self.state.notes.append(f"{label}: failed: {type(error).__name__}: {message} (traceback on stderr)")
            self.save()

    def section(self, name: str) -> None:
        print(f"-- {name} (at {self.budget.elapsed():.0f} s)", flush=True)
        self._section = (name, self.budget.elapsed())

    def save(self) -> None:
        name, start = self._section
        if name:
            self.state.sections_s[name] = self.budget.elapsed() - start
        write_all(self.out, self.jobs, self.state, self.budget)

    def steps(self, job: Job, mode: str) -> None:
        compiling = mode != "eager"
        predicted = self.budget.predict_compiled(job) if compiling else 20
        if not self.budget.allows(predicted):
            self.state.notes.append(f"{job.key} {mode}: skipped, predicted to end after the "
                                    f"{self.budget.seconds:.0f} s budget")
            return
        measurement = measure(job, mode, self.device, self.sizes, self.kept)
        self.state.steps.append(measurement)
        if compiling:
            self.budget.learn(job, sum(measurement.warmup_s.values()))
        self.save()

    def metrics(self) -> None:
        if not self.set14.is_dir():
            self.state.notes.append(f"Set14 metrics: skipped ({self.set14} not found)")
            return
        result = bench.metrics_time(self.set14, self.device, self.sizes.metric_repeats)
        self.state.metrics = {**result, "repeats": self.sizes.metric_repeats}
        self.save()

    def pipeline(self, job: Job) -> None:
        """SR end to end with +BAM's fastest step already built; then the job's steps are freed."""
        fastest = best(self.state.steps, job.key, "bam")
        if not self.t91.is_dir():
            self.state.notes.append(f"{job.key} pipeline: skipped ({self.t91} not found)")
        elif fastest is None or not self.budget.allows(30):
            self.state.notes.append(f"{job.key} pipeline: skipped (no +BAM step measured, or no time left)")
        else:
            step = self.kept[(job.key, fastest[1])]
            result = bench.sr_pipeline(self.t91, job.net.batch, self.workers, self.sizes.pipeline_steps,
                                       self.device, step, job.channels_last, job.net.target_shape[-1])
            self.state.pipeline[job.key] = {**result, "mode": fastest[1]}
            print(f"pipeline {job.key}: {self.state.pipeline[job.key]}", flush=True)
        for key in [k for k in self.kept if k[0] == job.key]:
            del self.kept[key]
        bench.release_memory(self.device)
        self.save()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check = DeviceCheck(args, argv)
    check.run()
    print((args.output_dir / "summary.md").read_text(), flush=True)
    if check.interrupted:
        return 130  # stopped by SIGINT, as a shell reports it
    return 1 if check.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
