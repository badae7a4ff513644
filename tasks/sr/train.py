"""Train SRResNet and SRResNet+BAM on a folder of HR images, score them, and compare them.

    accelerate launch launch/sr.py                  # the main job: minutes, no download, CPU or GPU
    accelerate launch launch/sr.py --preset t91     # one GPU, the SRGAN recipe on T91
    accelerate launch launch/sr.py --preset srgan --train-dir /data/DIV2K_train_HR --attention bam

Presets (``tasks.sr.presets``) set every default; each command-line option overrides them. The
run folder gets ``checkpoints/{last,best}`` (each with ``network.safetensors`` + ``network.json``
for ``tasks.sr.evaluate`` / ``tasks.sr.upscale``), ``metrics.jsonl``, ``samples/*.png``
(SR | bicubic | HR), ``summary.json`` and ``summary.md`` (model vs bicubic per set).
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from bam import count_macs, count_params, list_attentions
from tasks.common.cli import positive_int
from tasks.common.model_io import ModelDescription
from tasks.common.run import RunInfo, Schedule, Task, main as run_main
from tasks.common.summary import render_markdown
from tasks.data.root import data_root
from tasks.data.sr import SRTrainFolder
from tasks.report import report_paired_runs
from tasks.sr.ensemble import SelfEnsemble
from tasks.sr.evaluate import BICUBIC, ENSEMBLE_SUFFIX, format_table, load_sets, score_set
from tasks.sr.metrics import PROTOCOLS
from tasks.sr.model import SUPPORTED_SCALES, srresnet
from tasks.sr.presets import PRESETS, default_preset
from tasks.sr.samples import bicubic_picture, make_panel, model_label
from tasks.utils.files import write_png_atomic, write_text_atomic

MODEL_BUILDER = "tasks.sr.model:srresnet"
LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}  # the SRGAN recipe's, EDSR's


class SREvaluator:
    """``evaluate_fn`` for the Trainer: PSNR/SSIM per set (gathered over processes) and sample
    panels (main process), named after the step they show.

    Before the last step only the first set is scored with ``--curve-sets first``: the curve and
    the choice of ``best`` need no more, and the larger sets cost most of a CPU run's evaluations.
    At the last step ``--self-ensemble`` adds every set's x8 self-ensemble as a set of its own
    (``Set5+x8``)."""

    def __init__(self, args: argparse.Namespace, data: SRData, run_dir: Path, tracker) -> None:
        self.args, self.data, self.run_dir, self.tracker = args, data, Path(run_dir), tracker

    def __call__(self, model: torch.nn.Module, accelerator, step: int) -> dict[str, Any]:
        args, sets = self.args, self.data.sets
        final = step >= args.max_steps
        scored = [(name, dataset, model) for name, dataset in sets.items()]
        if args.curve_sets == "first" and not final:
            scored = scored[:1]
        if args.self_ensemble and final:
            scored += [(name + ENSEMBLE_SUFFIX, dataset, SelfEnsemble(model))
                       for name, dataset in sets.items()]
        pictures = args.num_pictures if accelerator.is_main_process else 0
        # the first set's first images are the panels': their outputs are kept, not computed again
        results = {name: score_set(dataset, network, args.protocol, accelerator,
                                   keep=0 if position else pictures)
                   for position, (name, dataset, network) in enumerate(scored)}
        if pictures:
            self._save_samples(model, accelerator.device, step, results)
        metrics: dict[str, Any] = {}
        per_image = {}  # what a paired comparison with another run needs (tasks.report)
        for name, result in results.items():
            per_image[f"{name}/names"] = list(result["images"])
            for metric in ("psnr", "ssim"):
                metrics[f"{metric}/{name}"] = result[metric]
                per_image[f"{name}/{metric}"] = [image[metric] for image in result["images"].values()]
        return {**metrics, "per_sample": per_image}

    @torch.no_grad()
    def _save_samples(self, model: torch.nn.Module, device, step: int,
                      results: Mapping[str, Any]) -> None:
        """Panels of the first set's first images, captioned with each image's own PSNR/SSIM
        (whole image, the run's protocol); the model's outputs the scoring kept on this process
        are used, the others are computed here."""
        def score(result: Mapping[str, Any], image: str) -> str:
            found = result.get("images", {}).get(image)
            return f"\n{found['psnr']:.2f} dB, SSIM {found['ssim']:.4f}" if found else ""

        name, dataset = next(iter(self.data.sets.items()))
        outputs = results[name]["outputs"]
        images = {}
        for index in range(min(self.args.num_pictures, len(dataset))):
            item = dataset[index]
            sr = outputs[index] if index in outputs else model(item["lr"][None].to(device))[0]
            labels = (f"SR, step {step}{score(results[name], item['name'])}",
                      f"bicubic{score(self.data.bicubic.get(name, {}), item['name'])}",
                      "HR\nscores: whole image")
            panel = make_panel((sr.float(), bicubic_picture(item["lr"], dataset.scale), item["hr"]),
                               labels)
            path = self.run_dir / "samples" / f"step{step:07d}_{name}_{item['name']}.png"
            write_png_atomic(path, panel)
            images[f"samples/{name}/{item['name']}"] = panel
        self.tracker.log_images(images, step, caption="SR | bicubic | HR")


@dataclass
class SRData:
    root: Path
    train: Any
    train_label: str
    sets: dict[str, Any]
    bicubic: dict[str, Any]  # score_set's bicubic results per set (main process only)


def _presets_help() -> str:
    lines = ["presets (defaults of the options above; any option overrides them):"]
    for name, p in sorted(PRESETS.items()):
        lines.append(f"  {name:6s} train on <data root>/{p['train_subdir']}; x{p['scale']}, {p['patch_size']}px HR "
                     f"crops, batch {p['batch_size']}, Adam lr {p['lr']:g}, {p['max_steps']:,} steps, eval every "
                     f"{p['eval_every']:,} on {'/'.join(p['sets'])}, {model_label('none', p['global_residual'])}"
                     + (f", EMA {p['ema']}" if p["ema"] else "")
                     + (f", {p['mixed_precision']} autocast here" if p.get("mixed_precision") else ""))
    return "\n".join(lines)


class SRTask(Task):
    name = "sr"
    title = "Super-resolution"
    prog = "accelerate launch launch/sr.py"
    description = __doc__
    primary_mode = "max"
    run_defaults = {"num_pictures": 2}

    @property
    def attentions(self) -> list[str]:
        return ["none", *list_attentions()]

    # -- options --------------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.epilog = _presets_help()
        parser.add_argument("--preset", default=default_preset(), choices=sorted(PRESETS),
                            help="recipe that sets the defaults below (default: quick-gpu with a GPU, quick "
                                 "without: %(default)s here)")
        data = parser.add_argument_group("data")
        data.add_argument("--train-dir", nargs="+", default=None,
                          help="folder(s) of HR training images, searched recursively "
                               "(default: the preset's folder under the data root)")
        data.add_argument("--scale", type=int, choices=SUPPORTED_SCALES, help="SR factor")
        data.add_argument("--patch-size", type=positive_int,
                          help="HR crop side (a multiple of --scale)")
        data.add_argument("--sets", nargs="+",
                          help="evaluation sets: names under <data root>/sr, folders, or 'embedded'")
        data.add_argument("--protocol", choices=sorted(PROTOCOLS), help="evaluation protocol")
        data.add_argument("--curve-sets", choices=("all", "first"),
                          help="sets scored at the evaluations before the last one: all, or the first only "
                               "(its curve and the best checkpoint; every set is scored at the end)")
        data.add_argument("--self-ensemble", action="store_true",
                          help="at the end, also score the x8 self-ensemble (mean over flips and rotations) of "
                               "each set, as a set of its own (<set>+x8)")
        data.add_argument("--repeat", type=positive_int,
                          help="visits of each training image per epoch")
        data.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None,
                          help="keep decoded training images in memory (small sets)")
        model = parser.add_argument_group("model")
        model.add_argument("--global-residual", action=argparse.BooleanOptionalAction, default=None,
                           help="add MATLAB-bicubic upsampling of the input to the output, last conv started at "
                                "zero (step 0 is bicubic); not SRGAN's network (quick: on; t91, srgan: off)")
        model.add_argument("--attention-interval", type=positive_int,
                           help="attention after every N-th residual block")
        model.add_argument("--num-blocks", type=positive_int, help="residual blocks")
        model.add_argument("--channels", type=positive_int, help="feature channels")
        optim = parser.add_argument_group("optimisation")
        optim.add_argument("--lr", type=float, help="Adam learning rate")
        optim.add_argument("--betas", type=float, nargs=2, help="Adam betas")
        optim.add_argument("--loss", choices=sorted(LOSSES), help="pixel loss: mse (the SRGAN recipe) or l1")
        optim.add_argument("--lr-schedule", choices=("constant", "cosine"),
                           help="constant (the SRGAN recipe) or cosine decay to 1%% of --lr over the run")
        optim.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default: off)")

    def parse_args(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """Parse with the preset's values as defaults, so every explicit option wins."""
        parser = self.build_parser()
        # --preset alone first, without --help, so that --help shows the preset's defaults; an
        # unknown name is left to the full parser's error message.
        named = argparse.ArgumentParser(add_help=False)
        named.add_argument("--preset", default=default_preset())
        name = named.parse_known_args(argv)[0].preset
        # a copy: the run may change its lists without changing the preset
        parser.set_defaults(**copy.deepcopy(PRESETS[name if name in PRESETS else default_preset()]))
        args = parser.parse_args(argv)
        args.betas = tuple(args.betas)
        return args

    def check(self, args: argparse.Namespace) -> None:
        super().check(args)
        if args.patch_size % args.scale:
            raise ValueError(f"--patch-size {args.patch_size} must be a positive multiple of --scale {args.scale} "
                             f"(the LR patch is patch-size / scale pixels)")
        if not args.lr > 0:
            raise ValueError(f"--lr must be positive, got {args.lr}")
        if args.attention != "none" and args.attention_interval > args.num_blocks:
            raise ValueError(f"--attention {args.attention}: the network built from these options holds no "
                             f"{args.attention} module (--attention-interval {args.attention_interval} is more than "
                             f"--num-blocks {args.num_blocks})")

    # -- the pieces of one run -----------------------------------------------------------------
    def data(self, args: argparse.Namespace, accelerator) -> SRData:
        root = data_root(args.data_root)
        sources, label = _train_sources(args, root)
        train = SRTrainFolder(sources, scale=args.scale, patch_size=args.patch_size, cache=bool(args.cache),
                              repeat=args.repeat)
        sets = load_sets(args.sets, args.scale, args.data_root, args.max_images)
        # Deterministic and cheap: once, on the main process (the panels and the report use it).
        bicubic = ({name: score_set(ds, BICUBIC, args.protocol) for name, ds in sets.items()}
                   if accelerator.is_main_process else {})
        return SRData(root, train, label, sets, bicubic)

    def model(self, args: argparse.Namespace, data: SRData) -> torch.nn.Module:
        return srresnet(**model_kwargs(args))

    def optimizer(self, args: argparse.Namespace, model: torch.nn.Module, data: SRData, schedule: Schedule):
        # fused: one kernel for all tensors instead of six per tensor (on the CPU, Adam would otherwise
        # loop over the network's 160-250 tensors in Python every step)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=args.betas, fused=True)
        scheduler = None
        if args.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, schedule.max_steps,
                                                                   eta_min=args.lr / 100)
        return optimizer, scheduler

    def loss(self, args: argparse.Namespace):
        pixel_loss = LOSSES[args.loss]  # between SR and HR
        return lambda model, batch: pixel_loss(model(batch["lr"]).float(), batch["hr"].float())

    def describe(self, args: argparse.Namespace, data: SRData, model: torch.nn.Module, schedule: Schedule) -> RunInfo:
        kwargs = model_kwargs(args)
        lr_side = args.patch_size // args.scale
        with model.layer_by_layer():  # the paper's convention: the layers as drawn
            params, macs = count_params(model), count_macs(model, (3, lr_side, lr_side))
        macs_input = f"3x{lr_side}x{lr_side} LR ({args.patch_size}x{args.patch_size} HR patch)"
        # What every table sets both networks against: bicubic, scored the same way.
        # (bicubic commutes with flips and rotations: its x8 self-ensemble is itself)
        ensembles = [ENSEMBLE_SUFFIX] if args.self_ensemble else []
        reference = {"name": "bicubic", "metrics": {f"{metric}/{name}{suffix}": r[metric]
                                                    for name, r in data.bicubic.items()
                                                    for suffix in ["", *ensembles] for metric in ("psnr", "ssim")}}
        config = {
            "arch": "srresnet", "attention": args.attention, "dataset": data.train_label, "preset": args.preset,
            "model": kwargs, "scale": args.scale, "patch_size": args.patch_size, "batch_size": args.batch_size,
            "lr": args.lr, "betas": list(args.betas), "lr_schedule": args.lr_schedule, "loss": args.loss,
            "sets": list(data.sets),
            # how to find each set again: a folder's absolute path, else its name
            "set_sources": [str(Path(s).resolve()) if Path(s).is_dir() else s for s in args.sets],
            "protocol": args.protocol, "data_root": str(data.root.resolve()),
            "train_images": len(data.train.files),
            "repeat": args.repeat, "params": params, "macs": macs, "macs_input": macs_input,
        }
        variant = "-gr" if args.global_residual else ""  # another network: never the same folder or group
        return RunInfo(
            name=f"srresnet{variant}-{args.attention}-x{args.scale}-{args.preset}-s{args.seed}",
            group=f"sr-{args.preset}-x{args.scale}{variant}", config=config, tags=[args.preset],
            description=ModelDescription(MODEL_BUILDER, kwargs, self.name,
                                         {"protocol": args.protocol, "train": data.train_label}),
            summary_extra={"macs": macs, "macs_input": macs_input, "protocol": args.protocol, "reference": reference,
                           "preset": args.preset},
            primary_metric=f"psnr/{next(iter(data.sets))}")

    def evaluator(self, args: argparse.Namespace, data: SRData, run_dir: Path, tracker) -> SREvaluator:
        return SREvaluator(args, data, run_dir, tracker)

    def report(self, args: argparse.Namespace, run_dir: Path, summary: dict) -> None:
        """Add the model-vs-bicubic table to summary.md and print it."""
        sets = list(summary["config"]["sets"])
        sets += [name + ENSEMBLE_SUFFIX for name in sets] if args.self_ensemble else []
        baseline = _results_from(summary["reference"]["metrics"], sets)
        label = model_label(args.attention, args.global_residual)
        steps = {"best": summary.get("best_step"), "final": summary.get("steps")}
        results = {which: _results_from(summary.get(which) or {}, sets) for which in steps}
        if steps["final"] == steps["best"]:
            del results["final"]  # one checkpoint: one table
        tables = [(f"{which} checkpoint (step {steps[which]})",
                   format_table(found, args.protocol, args.scale, baseline, model=label))
                  for which, found in results.items() if found]
        note = f"MACs: {summary.get('macs'):,} counted on a {summary.get('macs_input')} input."
        best = results["best"]
        if best and baseline and any(best[name]["psnr"] <= baseline[name]["psnr"] for name in best):
            note += (f"\nNot above bicubic after {summary.get('steps'):,} updates: SRResNet needs "
                     "tens of thousands (the t91 preset on one GPU, or srgan, the paper's recipe).")
        section = "## Super-resolution: model vs bicubic\n\n" + "".join(
            f"### {title}\n\n{table}\n\n" for title, table in tables) + note + "\n"
        write_text_atomic(run_dir / "summary.md", render_markdown(summary) + "\n" + section)
        text = "".join(f"\n{label} vs bicubic, {title}:\n{table}\n" for title, table in tables)
        print(f"{text}\n{note}\nrun folder: {run_dir}", flush=True)


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"scale": args.scale, "num_blocks": args.num_blocks, "channels": args.channels,
            "attention": args.attention, "attention_interval": args.attention_interval,
            "global_residual": bool(args.global_residual)}


def _train_sources(args: argparse.Namespace, root: Path) -> tuple[list[Path], str]:
    """(folders, data set label) for the training set."""
    if args.train_dir:
        return [Path(p) for p in args.train_dir], ",".join(Path(p).name for p in args.train_dir)
    subdir = args.train_subdir  # the preset's
    folder = root / subdir
    if not folder.is_dir():
        raise FileNotFoundError(f"training folder {folder} not found (preset {args.preset!r}): pass --train-dir, "
                                f"or point --data-root / $BAM_DATA_ROOT at the folder holding {subdir}")
    return [folder], subdir


def _results_from(metrics: Mapping[str, float], sets) -> dict[str, dict[str, float]]:
    return {name: {"psnr": metrics[f"psnr/{name}"], "ssim": metrics[f"ssim/{name}"]}
            for name in sets if f"psnr/{name}" in metrics}


TASK = SRTask()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return TASK.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    return run_main(TASK, argv, compare=report_paired_runs)


if __name__ == "__main__":
    main()
