"""Score an SR model, or the bicubic baseline, on benchmark sets.

    python -m tasks.sr.evaluate --model bicubic --sets Set5 Set14
    python -m tasks.sr.evaluate --checkpoint runs/sr-t91-bam/ --sets Set5 Set14 --json

``--checkpoint`` takes a ``model.pt``, a checkpoint folder (``checkpoints/best``) or a run folder
(its best checkpoint). Sets are names under ``<data root>/sr`` (Set5, Set14, B100, Urban100...),
folders, or ``embedded`` (held-out scikit-image photographs). Scores are means of per-image PSNR
and SSIM under the chosen protocol (see ``tasks.sr.metrics.PROTOCOLS``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Mapping

import torch
from torch.utils.data import DataLoader, Dataset

from tasks.common.cli import run_cli
from tasks.sr.metrics import DEFAULT_PROTOCOL, PROTOCOLS, bicubic_baseline, score_sr
from tasks.utils.images import quantize

__all__ = ["score_set", "score_sets", "format_table", "main", "BICUBIC"]

BICUBIC = "bicubic"


class _Indexed(Dataset):
    """Adds each item's position, so gathered results can be checked for duplicates and gaps."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "index": index}


@torch.no_grad()
def score_set(dataset: Dataset, upscale: Callable[[torch.Tensor], torch.Tensor] | str, protocol: str,
              accelerator=None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Mean PSNR/SSIM of ``upscale`` (LR [0,1] -> SR [0,1], or ``"bicubic"``) over ``dataset``
    (a :class:`tasks.data.sr.SRBenchmark`). With an ``accelerator`` the images are shared out over
    the processes and gathered back with ``gather_for_metrics``: every image is counted once.

    Returns ``{"psnr", "ssim", "images": {name: {"psnr", "ssim"}}}`` (same on every process).
    """
    scale = dataset.scale
    loader = DataLoader(_Indexed(dataset), batch_size=1, shuffle=False, num_workers=0)
    if accelerator is not None:
        from tasks.common.trainer import prepare_eval_loader

        loader = prepare_eval_loader(accelerator, loader)
        device = accelerator.device
    gathered, names = [], {}
    for batch in loader:
        lr, hr = batch["lr"].to(device), batch["hr"].to(device)
        gray = batch["gray"].to(device)
        if upscale == BICUBIC:
            scores = bicubic_baseline(quantize(hr), scale, protocol, gray=gray)
        else:
            sr = upscale(lr)  # (a model prepared for mixed precision keeps its autocast forward)
            scores = score_sr(sr.float(), hr, scale, protocol, gray=gray, value_range=1.0)
        row = torch.stack([batch["index"].to(device, torch.float64), scores["psnr"], scores["ssim"]], dim=1)
        if accelerator is not None:
            row = accelerator.gather_for_metrics(row)  # per batch: drops the padding of uneven shards
        gathered.append(row.cpu())
    rows = torch.cat(gathered) if gathered else torch.zeros(0, 3, dtype=torch.float64)
    indices = sorted(int(i) for i in rows[:, 0])
    if indices != list(range(len(dataset))):
        raise RuntimeError(f"evaluation of {getattr(dataset, 'name', 'a set')} saw images {indices}, "
                           f"expected each of 0..{len(dataset) - 1} once")
    rows = rows[rows[:, 0].argsort()]
    for index, value_psnr, value_ssim in rows.tolist():
        names[dataset[int(index)]["name"]] = {"psnr": value_psnr, "ssim": value_ssim}
    return {"psnr": float(rows[:, 1].mean()), "ssim": float(rows[:, 2].mean()), "images": names}


def score_sets(sets: Mapping[str, Dataset], upscale, protocol: str, accelerator=None,
               device: str | torch.device = "cpu") -> dict[str, dict[str, Any]]:
    """:func:`score_set` over named sets: ``{set: {"psnr", "ssim", "images"}}``."""
    return {name: score_set(ds, upscale, protocol, accelerator, device) for name, ds in sets.items()}


def format_table(results: Mapping[str, Mapping[str, float]], protocol: str, scale: int,
                 baseline: Mapping[str, Mapping[str, float]] | None = None, model: str = "model") -> str:
    """Markdown table of PSNR/SSIM per set; with ``baseline``, bicubic beside the model."""
    lines = [f"x{scale} super-resolution, protocol `{protocol}`: {PROTOCOLS[protocol]}", ""]
    if baseline is None:
        lines += ["| set | PSNR (dB) | SSIM | protocol |", "|---|---:|---:|---|"]
        lines += [f"| {name} | {r['psnr']:.4f} | {r['ssim']:.4f} | {protocol} |" for name, r in results.items()]
    else:
        lines += [f"| set | {model} PSNR | bicubic PSNR | gain (dB) | {model} SSIM | bicubic SSIM | protocol |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name, r in results.items():
            b = baseline[name]
            lines.append(f"| {name} | {r['psnr']:.4f} | {b['psnr']:.4f} | {r['psnr'] - b['psnr']:+.4f} "
                         f"| {r['ssim']:.4f} | {b['ssim']:.4f} | {protocol} |")
    return "\n".join(lines)


def load_sets(names, scale: int, data_root=None, protocol: str | None = None) -> dict[str, Dataset]:
    """``{set name: SRBenchmark}``. The sets are the same under every protocol: ``protocol`` is
    ignored, accepted only while ``tasks/sr/train.py`` still passes it."""
    from tasks.data.sr import SRBenchmark

    sets = {}
    for name in names:
        dataset = SRBenchmark(name, scale=scale, data_root=data_root)
        sets[dataset.name] = dataset
    return sets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tasks.sr.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="model.pt, checkpoint folder or run folder")
    what.add_argument("--model", choices=[BICUBIC], help="score a baseline instead of a trained model")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"], help="set names or folders")
    parser.add_argument("--scale", type=int, default=None, help="SR factor (default: the checkpoint's, else 4)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default=DEFAULT_PROTOCOL)
    parser.add_argument("--json", action="store_true", help='print {"Set5": {"psnr": ..., "ssim": ...}, ...}')
    parser.add_argument("--data-root", default=None, help="data root (default: $BAM_DATA_ROOT, else ./data)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def _evaluate(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA GPU is available (use --device cpu)")
    upscale: Any = BICUBIC
    scale = args.scale or 4
    name = BICUBIC
    if args.checkpoint:
        from tasks.common.model_io import load_model

        model, record = load_model(args.checkpoint, map_location="cpu")
        trained = int(record["kwargs"].get("scale", getattr(model, "scale", 4)))
        if args.scale is not None and args.scale != trained:
            raise ValueError(f"--scale {args.scale} does not match the checkpoint, which was trained for x{trained}")
        scale, name = trained, str(args.checkpoint)
        model = model.to(args.device).eval()
        upscale = model
    sets = load_sets(args.sets, scale, args.data_root)
    results = score_sets(sets, upscale, args.protocol, device=args.device)
    if args.json:
        print(json.dumps({s: {"psnr": r["psnr"], "ssim": r["ssim"]} for s, r in results.items()}))
    else:
        print(f"model: {name}")
        print(format_table(results, args.protocol, scale))
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    return run_cli(_evaluate, parse_args(argv))


if __name__ == "__main__":
    main()
