"""The paper's classification tables as runnable experiment definitions.

``python -m tasks.classify.experiments TABLE [--print-commands | --dry-run] [--seeds 0 1 2] [ARGS]``
runs every row of a table (each a ``python -m tasks.classify`` process, further ``ARGS`` passed
on), skipping finished runs and resuming interrupted ones, or prints the commands for a cluster.
Runs go to ``OUTPUT_DIR/TABLE/ROW-sSEED`` (W&B group ``TABLE``); ``OUTPUT_DIR/TABLE/experiment.json``
lists the rows, their run folders and the paper's numbers. Each run records its row
(``--experiment TABLE:ROW``), so ``python -m tasks.report OUTPUT_DIR/TABLE`` sets the paper's
numbers beside the measured ones from the runs themselves.

Paper numbers: CIFAR-100 top-1 error (%), parameters in millions and GFLOPs (= GMACs), copied from
Park et al. (BAM). Where the paper is ambiguous:

* Table 1(a) and 1(b): the text names ResNet50, but the table's base row and parameter counts
  (34.52M -> 34.61M, error 18.18) are those of ResNeXt29 8x64d, so the runs use ResNeXt29 8x64d.
  The d = 4, r = 16 row appears in both halves of Table 1(a); it is one run ("bam").
* Table 1(b): the extracted table has eight error columns; we read them as base, channel only,
  spatial only, sigma(max), sigma(C*S), sigma(C)+sigma(S), sigma(C+S) without identity, BAM.
* Table 1(c): "+ ResBlock" etc. add one more block of the stage's own type at each place BAM goes
  (``--attention extra-block``); this reproduces the paper's parameter counts (25.14M, 24.88M,
  37.3M). The paper prints 23.68M for the ResNet50 base and 23.56M for WRN-28-8 + BAM here, but
  23.71M and 23.42M in Tables 2 and 3 (and 34.4M for the ResNeXt29 8x64d base instead of 34.52M).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tasks.utils.files import write_json_atomic


@dataclass(frozen=True)
class Run:
    """One row of a paper table: a network, an attention variant and the paper's figures."""

    row: str  # short id, unique in its table; the run folder is ROW-sSEED
    label: str  # the row as the paper prints it
    arch: str
    attention: str = "none"
    options: tuple[str, ...] = ()  # further `python -m tasks.classify` arguments (BAM settings)
    dataset: str = "cifar100"
    paper: dict = field(default_factory=dict, hash=False, compare=False)

    def argv(self) -> list[str]:
        return ["--dataset", self.dataset, "--arch", self.arch, "--attention", self.attention, *self.options]


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    runs: tuple[Run, ...]

    def find(self, row: str) -> Run:
        for run in self.runs:
            if run.row == row:
                return run
        raise ValueError(f"{self.name} has no row {row!r}; rows: {', '.join(r.row for r in self.runs)}")


def _p(error: float | None = None, params: float | None = None, gflops: float | None = None, **more) -> dict:
    """The paper's figures of one row: top-1 error (%), params (M), GFLOPs (G MACs)."""
    values = {"top1_err": error, "params_m": params, "gflops": gflops, **more}
    return {k: v for k, v in values.items() if v is not None}


_RX = "resnext29_8x64d"


def _table1a() -> Experiment:
    def bam(row, label, d, r, err, params):
        return Run(row, label, _RX, "bam", ("--dilation", str(d), "--reduction", str(r)), paper=_p(err, params))

    return Experiment("table1a", "Table 1(a): BAM dilation d and reduction r (CIFAR-100, ResNeXt29 8x64d)", (
        Run("base", "Base (ResNeXt29 8x64d)", _RX, paper=_p(18.18, 34.52)),
        bam("d1", "d=1 (r=16)", 1, 16, 17.24, 34.61),
        bam("d2", "d=2 (r=16)", 2, 16, 16.92, 34.61),
        bam("bam", "d=4, r=16 (BAM default)", 4, 16, 16.71, 34.61),
        bam("d6", "d=6 (r=16)", 6, 16, 16.97, 34.61),
        bam("r4", "r=4 (d=4)", 4, 4, 16.88, 35.14),
        bam("r8", "r=8 (d=4)", 4, 8, 17.14, 34.74),
        bam("r32", "r=32 (d=4)", 4, 32, 16.92, 34.56),
    ))


def _table1b() -> Experiment:
    def bam(row, label, options, err):
        return Run(row, label, _RX, "bam", options, paper=_p(err))

    return Experiment("table1b", "Table 1(b): BAM branches and combining (CIFAR-100, ResNeXt29 8x64d)", (
        Run("base", "Base (ResNeXt29 8x64d)", _RX, paper=_p(18.18, 34.52)),
        bam("channel", "channel only", ("--branches", "channel"), 16.82),
        bam("spatial", "spatial only", ("--branches", "spatial"), 17.00),
        bam("max", "both, sigma(max(C, S))", ("--combine", "max"), 17.44),
        bam("product", "both, sigma(C * S)", ("--combine", "product"), 17.55),
        bam("sigmoid_sum", "both, sigma(C) + sigma(S)", ("--combine", "sigmoid_sum"), 17.02),
        bam("no_identity", "both, sigma(C + S), no identity", ("--no-identity",), 16.89),
        bam("bam", "BAM: both, sigma(C + S), identity", (), 16.71),
    ))


def _table1c() -> Experiment:
    rows = []
    for arch, name, block, base, extra, with_bam in (
        ("resnet50", "ResNet50", "ResBlock", (21.49, 23.68), (21.02, 25.14), (20.00, 24.07)),
        ("wrn28_8", "WideResNet28 (w=8)", "WideResBlock", (20.40, 23.40), (19.51, 24.88), (19.06, 23.56)),
        (_RX, "ResNeXt29 8x64d", "ResNeXtBlock", (18.18, 34.40), (17.69, 37.30), (16.71, 34.61)),
    ):
        rows += [
            Run(f"{arch}", name, arch, paper=_p(*base)),
            Run(f"{arch}-extra", f"{name} + {block}", arch, "extra-block", paper=_p(*extra)),
            Run(f"{arch}-bam", f"{name} + BAM", arch, "bam", paper=_p(*with_bam)),
        ]
    return Experiment("table1c", "Table 1(c): BAM vs one extra conv block at the same places (CIFAR-100)",
                      tuple(rows))


_BAM = ("bam", "BAM", "bam")  # (row suffix, label, --attention) of a compared variant


def _compare(name: str, title: str, variants: tuple[tuple[str, str, str], ...], networks: tuple,
             dataset: str = "cifar100", paper=_p) -> Experiment:
    """Each network ``(arch, name, base figures, figures per variant...)``: its base row, then a row
    ``ARCH-SUFFIX`` per variant."""
    rows = []
    for arch, label, base, *figures in networks:
        rows.append(Run(arch, label, arch, dataset=dataset, paper=paper(*base)))
        rows += [Run(f"{arch}-{suffix}", f"{label} + {what}", arch, attention, dataset=dataset, paper=paper(*values))
                 for (suffix, what, attention), values in zip(variants, figures)]
    return Experiment(name, title, tuple(rows))


def _imagenet_figures(top1: float, top5: float, params: float, gflops: float) -> dict:
    return _p(top1, params, gflops, top5_err=top5)


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    _table1a(), _table1b(), _table1c(),
    _compare("table2", "Table 2: BAM at the bottlenecks vs in every conv block (BAM-C), CIFAR-100",
             (("bam-c", "BAM-C", "bam-c"), _BAM), (
        ("resnet50", "ResNet50", (21.49, 23.71, 1.22), (20.88, 28.98, 1.37), (20.00, 24.07, 1.25)),
        ("preresnet110", "PreResNet110", (22.22, 1.73, 0.245), (21.29, 2.17, 0.275), (21.96, 1.73, 0.246)),
        ("wrn28_8", "WideResNet28 (w=8)", (20.40, 23.40, 3.36), (20.06, 23.78, 3.39), (19.06, 23.42, 3.37)),
        (_RX, "ResNeXt29 8x64d", (18.18, 34.52, 4.99), (18.15, 35.60, 5.07), (16.71, 34.61, 5.00)),
    )),
    _compare("table3", "Table 3: CIFAR-100 networks with and without BAM", (_BAM,), (
        ("resnet50", "ResNet50", (21.49, 23.71, 1.22), (20.00, 24.07, 1.25)),
        ("resnet101", "ResNet101", (20.00, 42.70, 2.44), (19.61, 43.06, 2.46)),
        ("preresnet110", "PreResNet110", (22.22, 1.726, 0.245), (21.96, 1.733, 0.246)),
        ("wrn28_8", "WideResNet28 (w=8)", (20.40, 23.40, 3.36), (19.06, 23.42, 3.37)),
        ("wrn28_10", "WideResNet28 (w=10)", (18.89, 36.54, 5.24), (18.56, 36.57, 5.25)),
        ("wrn40_10", "WideResNet40 (w=10)", (18.29, 55.90, 8.07), (18.17, 55.94, 8.08)),
        (_RX, "ResNeXt29 8x64d", (18.18, 34.52, 4.99), (16.71, 34.61, 5.00)),
        ("resnext29_16x64d", "ResNeXt29 16x64d", (17.25, 68.25, 9.88), (16.39, 68.34, 9.90)),
        ("densenet100_bc", "DenseNet100-BC (k=12)", (21.95, 0.8, 0.29), (20.65, 0.84, 0.30)),
    )),
    # ImageNet figures: top-1 error, top-5 error, params (M), GFLOPs.
    _compare("table4", "Table 4: ImageNet-1k networks with and without BAM", (_BAM,), (
        ("resnet18", "ResNet18", (29.60, 10.55, 11.69, 1.81), (28.88, 10.01, 11.71, 1.82)),
        ("resnet50", "ResNet50", (24.56, 7.50, 25.56, 3.86), (24.02, 7.18, 25.92, 3.94)),
        ("resnet101", "ResNet101", (23.38, 6.88, 44.55, 7.57), (22.44, 6.29, 44.91, 7.65)),
        ("wrn18_1.5", "WideResNet18 (widen=1.5)", (26.85, 8.88, 25.88, 3.87), (26.67, 8.69, 25.93, 3.88)),
        ("wrn18_2.0", "WideResNet18 (widen=2.0)", (25.63, 8.20, 45.62, 6.70), (25.00, 7.81, 45.71, 6.72)),
        ("resnext50_32x4d", "ResNeXt50 (32x4d)", (22.35, 6.01, 25.03, 3.77), (21.92, 5.89, 25.39, 3.85)),
        ("mobilenet_v2", "MobileNetV2", (28.27, 9.63, 3.505, 0.300), (27.50, 9.35, 3.516, 0.307)),
        ("squeezenet1_1", "SqueezeNet v1.1", (40.86, 18.88, 1.24, 0.290), (39.82, 17.68, 1.26, 0.304)),
    ), dataset="imagenet", paper=_imagenet_figures),
    _compare("table10", "Table 10: BAM vs SE (CIFAR-100)", (("se", "SE", "se"), _BAM), (
        ("resnet50", "ResNet50", (21.49, 23.71, 1.22), (20.72, 26.24, 1.23), (20.00, 24.07, 1.25)),
        ("preresnet110", "PreResNet110", (22.22, 1.73, 0.245), (21.85, 1.93, 0.245), (21.96, 1.73, 0.246)),
        ("wrn28_8", "WideResNet28 (w=8)", (20.40, 23.40, 3.36), (19.85, 23.58, 3.36), (19.06, 23.42, 3.37)),
        ("resnext29_16x64d", "ResNeXt29 16x64d", (17.25, 68.25, 9.88), (16.52, 68.81, 9.88), (16.39, 68.34, 9.9)),
    )),
)}


def get_experiment(name: str) -> Experiment:
    key = name.lower().replace("_", "").replace("-", "")
    if key not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[key]


def lookup_row(spec: str) -> tuple[Experiment, Run]:
    """``'table1b:channel'`` -> (experiment, run); used by the training CLI's ``--experiment``."""
    table, sep, row = spec.partition(":")
    if not sep:
        raise ValueError(f"--experiment must look like TABLE:ROW (e.g. table1b:channel), got {spec!r}")
    experiment = get_experiment(table)
    return experiment, experiment.find(row)


def _finished(run_dir: Path) -> bool:
    """The trainer also writes a summary when a run fails or is interrupted: check its status."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def plan(experiment: Experiment, seeds: list[int], output_dir: str | Path,
         extra: list[str]) -> list[tuple[Run, Path, list[str]]]:
    """``(row, run folder, arguments of python -m tasks.classify)`` for every (row, seed) of
    ``experiment``; ``extra`` arguments go last so they override."""
    group_dir = Path(output_dir) / experiment.name
    planned = []
    for run in experiment.runs:
        for seed in seeds:
            name = f"{run.row}-s{seed}"
            argv = [
                *run.argv(), "--seed", str(seed), "--output-dir", str(group_dir), "--run-name", name,
                "--group", experiment.name, "--experiment", f"{experiment.name}:{run.row}",
                "--resume",  # an interrupted run continues in its own folder; a new one starts at step 0
                *extra,
            ]
            planned.append((run, group_dir / name, argv))
    return planned


def write_manifest(experiment: Experiment, seeds: list[int], output_dir: str | Path) -> Path:
    """``OUTPUT_DIR/TABLE/experiment.json``: the table's rows, run folders and paper figures."""
    rows = [{**asdict(run), "options": list(run.options), "runs": [f"{run.row}-s{s}" for s in seeds]}
            for run in experiment.runs]
    # Atomic: a reader may open it while runs of the table go on.
    return write_json_atomic(Path(output_dir) / experiment.name / "experiment.json", {
        # "metric": what the paper's "error" column is compared with
        "experiment": experiment.name, "title": experiment.title, "metric": "top1_err",
        "seeds": seeds, "rows": rows})


def _command(launcher: str, argv: list[str]) -> str:
    return " ".join([launcher, *map(shlex.quote, argv)])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.classify.experiments",
        description="Run (or print the commands of) every run of one of the paper's classification "
        "tables. Unrecognised arguments are passed to every `python -m tasks.classify` run.",
    )
    parser.add_argument("table", help=f"one of: {', '.join(EXPERIMENTS)}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print-commands", action="store_true", help="print one shell command per run and exit")
    mode.add_argument("--dry-run", action="store_true", help="list the runs, their status and the paper's numbers")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run every row with")
    parser.add_argument("--rows", nargs="+", default=None, help="only these rows of the table")
    parser.add_argument("--output-dir", default="runs/classify", help="runs go to OUTPUT_DIR/TABLE/ROW-sSEED")
    parser.add_argument("--launcher", default="python -m tasks.classify",
                        help="command prefix of --print-commands, e.g. 'accelerate launch launch/classify.py'")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    try:
        experiment = get_experiment(args.table)
        if args.rows:
            experiment = replace(experiment, runs=tuple(experiment.find(r) for r in args.rows))
    except ValueError as error:
        parser.error(str(error))
    planned = plan(experiment, args.seeds, args.output_dir, extra)

    if args.print_commands:
        for _, _, run_argv in planned:
            print(_command(args.launcher, run_argv))
        return 0
    if args.dry_run:
        print(f"{experiment.title}: {len(planned)} runs under {Path(args.output_dir) / experiment.name}")
        for run, run_dir, _ in planned:
            status = "done" if _finished(run_dir) else "todo"
            paper = ", ".join(f"{k} {v}" for k, v in run.paper.items())
            print(f"  [{status}] {run_dir.name:28s} {run.label:40s} paper: {paper}")
        return 0

    write_manifest(experiment, args.seeds, args.output_dir)
    failed = []
    for number, (_, run_dir, run_argv) in enumerate(planned, 1):
        if _finished(run_dir):
            print(f"[{number}/{len(planned)}] {run_dir.name}: finished before (delete the folder "
                  "to run it again), skipped", flush=True)
            continue
        command = _command("python -m tasks.classify", run_argv)
        print(f"[{number}/{len(planned)}] {command}", flush=True)
        if subprocess.call([sys.executable, "-m", "tasks.classify", *run_argv]) != 0:
            failed.append(run_dir.name)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all runs of {experiment.name} finished; make the table with "
          f"`python -m tasks.report {Path(args.output_dir) / experiment.name}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
