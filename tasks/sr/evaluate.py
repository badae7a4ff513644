"""Score an SR model, the bicubic baseline, or anyone's SR images, on benchmark sets.

    python -m tasks.sr.evaluate --model bicubic                   # Set5, Set14 and B100
    python -m tasks.sr.evaluate --checkpoint runs/sr/RUN --self-ensemble --json
    python -m tasks.sr.evaluate --results my_method/ --sets Set5 Set14     # my_method/Set5/baby.png, ...

``--checkpoint`` takes a run folder (its best checkpoint), a checkpoint folder
(``checkpoints/best``) or its ``network.json``. ``--results DIR`` scores images made by any method,
found as ``DIR/<set>/<stem of the HR image>.<png|jpg|bmp>`` and of the HR image's size cropped to
a multiple of the scale (as BasicSR's folder script scores them). Sets are names under
``<data root>/sr`` (Set5, Set14, B100, Urban100...), folders, or ``embedded`` (held-out
scikit-image photographs). Scores are means of per-image PSNR and SSIM under the chosen protocol
(see ``tasks.sr.metrics.PROTOCOLS``). ``--self-ensemble`` adds the x8 self-ensemble's rows
(``Set5+x8``...). Under ``accelerate launch`` the images are split over the processes, each scored
once, and the main process prints.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from accelerate.utils import gather_object
from torch.utils.data import Dataset, default_collate

from tasks.common.cli import add_data_args, add_device_arg, positive_int, run_cli
from tasks.common.distributed import make_accelerator
from tasks.common.model_io import load_model
from tasks.data.images import read_rgb
from tasks.data.sr import SRBenchmark
from tasks.sr.ensemble import SelfEnsemble
from tasks.sr.metrics import DEFAULT_PROTOCOL, PROTOCOLS, bicubic_baseline, score_sr
from tasks.utils.images import quantize

BICUBIC = "bicubic"
ENSEMBLE_SUFFIX = "+x8"  # the rows of the x8 self-ensemble: Set5+x8, ...
RESULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def saved_image(folder: Path, set_name: str, stem: str, hr_shape: tuple[int, ...]) -> torch.Tensor:
    """The SR image another method wrote for HR image ``stem`` of ``set_name``,
    ``folder/<set>/<stem>.<png|jpg|jpeg|bmp>``, as a (1, 3, H, W) float tensor in 0..255."""
    candidates = [folder / set_name / f"{stem}{ext}" for ext in RESULT_EXTENSIONS]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"--results: no SR image for {set_name}/{stem}: expected "
                                f"{folder / set_name / stem}.png (or .jpg, .jpeg, .bmp)")
    image = torch.from_numpy(read_rgb(found)).permute(2, 0, 1)[None].to(torch.float64)
    (h, w), (want_h, want_w) = image.shape[-2:], hr_shape[-2:]
    if (h, w) != (want_h, want_w):
        raise ValueError(f"--results: {found} is {w}x{h}, expected {want_w}x{want_h} (the HR image "
                         "cropped to a multiple of the scale)")
    return image


# Images scored in one forward pass at most: bounded by HR pixels (B100's 100 images of 480x320 go
# 8 at a time; a 2-megapixel image alone), so memory stays that of one large image.
BATCH_PIXELS = 1_300_000


def same_shape_batches(dataset: Dataset) -> list[list[int]]:
    """Indices of ``dataset`` in batches of images of one shape (B100 has two), in set order within
    each shape. The batches do not depend on the number of processes, so every image is computed
    the same way however the batches are shared out."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index in range(len(dataset)):
        by_shape.setdefault(tuple(dataset[index]["hr"].shape), []).append(index)
    batches = []
    for shape, indices in by_shape.items():
        per_batch = max(1, BATCH_PIXELS // (shape[-1] * shape[-2]))
        batches += [indices[i:i + per_batch] for i in range(0, len(indices), per_batch)]
    return batches


def _score_batch(dataset: Dataset, indices: list[int], upscale, protocol: str, device,
                 outputs: dict[int, torch.Tensor]) -> torch.Tensor:
    """Rows ``(index, psnr, ssim)`` of one batch of same-shape images; the network's output for an
    index already in ``outputs`` replaces its placeholder there."""
    batch = default_collate([dataset[i] for i in indices])
    lr, hr, gray = (batch[key].to(device) for key in ("lr", "hr", "gray"))
    scale = dataset.scale
    if isinstance(upscale, Path):  # a folder of SR images (--results)
        saved = torch.cat([saved_image(upscale, dataset.name, name, hr.shape)
                           for name in batch["name"]])
        scores = score_sr(saved.to(device), quantize(hr), scale, protocol, gray=gray)
    elif upscale == BICUBIC:
        scores = bicubic_baseline(quantize(hr), scale, protocol, gray=gray)
    else:
        # oneDNN reads NHWC input without a reorder: ~15% faster; outputs equal up to float rounding
        # (a few 8-bit values round the other way: PSNR within 3e-5 dB per image)
        if lr.device.type == "cpu":
            lr = lr.contiguous(memory_format=torch.channels_last)
        sr = upscale(lr).float()
        scores = score_sr(sr, hr, scale, protocol, gray=gray, value_range=1.0)
        for row, index in enumerate(indices):
            if index in outputs:
                outputs[index] = sr[row].cpu()
    index = torch.tensor(indices, dtype=torch.float64, device=device)
    return torch.stack([index, scores["psnr"], scores["ssim"]], dim=1).cpu()


@torch.no_grad()
def score_set(dataset: Dataset, upscale: Callable[[torch.Tensor], torch.Tensor] | str | Path,
              protocol: str, accelerator=None, keep: int = 0) -> dict[str, Any]:
    """Mean PSNR/SSIM of ``upscale`` (LR [0,1] -> SR [0,1], ``"bicubic"``, or a folder of SR
    images: :func:`saved_image`) over ``dataset`` (a :class:`tasks.data.sr.SRBenchmark`), images
    of one shape batched together. With an ``accelerator`` the batches are shared out over the
    processes and gathered back: every image is counted once. Without one, it runs on the CPU.

    Returns ``{"psnr", "ssim", "images": {name: {"psnr", "ssim"}}}`` (same on every process), and
    with ``keep`` the network's outputs of the first ``keep`` images under ``"outputs"``
    (``{index: SR}``: those this process computed; sample panels need not run the network again).
    """
    batches = same_shape_batches(dataset)
    rank, processes, device = 0, 1, "cpu"
    if accelerator is not None:
        rank, processes, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    outputs = dict.fromkeys(range(min(keep, len(dataset))))
    rows = [_score_batch(dataset, indices, upscale, protocol, device, outputs) for indices in batches[rank::processes]]
    if processes > 1:
        rows = gather_object(rows)  # between this run's own processes: no file is read
    rows = torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.float64)
    indices = sorted(int(i) for i in rows[:, 0])
    if indices != list(range(len(dataset))):
        raise RuntimeError(f"evaluation of {getattr(dataset, 'name', 'a set')} saw images {indices}, "
                           f"expected each of 0..{len(dataset) - 1} once")
    rows = rows[rows[:, 0].argsort()]
    names = {dataset[int(index)]["name"]: {"psnr": psnr, "ssim": ssim} for index, psnr, ssim in rows.tolist()}
    result = {"psnr": float(rows[:, 1].mean()), "ssim": float(rows[:, 2].mean()), "images": names}
    if keep:
        result["outputs"] = {index: sr for index, sr in outputs.items() if sr is not None}
    return result


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


def load_sets(names, scale: int, data_root=None, max_images: int | None = None) -> dict[str, Dataset]:
    """``{set name: SRBenchmark}`` (the sets are the same under every protocol), each cut to its
    first ``max_images`` images when given."""
    sets = {}
    for name in names:
        dataset = SRBenchmark(name, scale=scale, data_root=data_root)
        dataset.files = dataset.files[:max_images]
        sets[dataset.name] = dataset
    return sets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tasks.sr.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="run folder, checkpoint folder or network.json of an SR model")
    what.add_argument("--model", choices=[BICUBIC], help="score a baseline instead of a trained model")
    what.add_argument("--results", metavar="DIR", help="score the SR images in DIR/<set>/<image>.png")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"],
                        help="set names under <data root>/sr, or folders (default: %(default)s)")
    parser.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                        help="the first N images of each set only (default: all)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="also score the x8 self-ensemble of the model (mean over flips and rotations), as "
                             "rows of its own (<set>+x8)")
    parser.add_argument("--scale", type=int, default=None, help="SR factor (default: the checkpoint's, else 4)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default=DEFAULT_PROTOCOL)
    parser.add_argument("--json", action="store_true",
                        help='print {"Set5": {"psnr": mean, "ssim": mean, "images": {"baby": {"psnr", "ssim"}}}} '
                             '(the infinite PSNR of an exact image is null)')
    add_data_args(parser)
    add_device_arg(parser)
    return parser.parse_args(argv)


def _what_to_score(args: argparse.Namespace, device: torch.device) -> tuple[Any, int, str]:
    """(upscale, scale, name) for score_set; a network is loaded onto ``device``."""
    if args.results:
        folder = Path(args.results).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--results: folder not found: {folder}")
        return folder, args.scale or 4, str(args.results)
    if not args.checkpoint:
        return BICUBIC, args.scale or 4, BICUBIC
    model = load_model(args.checkpoint, map_location="cpu", task="sr")[0]
    if args.scale not in (None, model.scale):
        raise ValueError(f"--scale {args.scale} does not match the checkpoint, which was trained for "
                         f"x{model.scale}")
    return model.eval().to(device), model.scale, str(args.checkpoint)


def _evaluate(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    device = torch.device(args.device)
    if args.self_ensemble and not args.checkpoint:
        raise ValueError("--self-ensemble needs --checkpoint (a network to run on the flipped and rotated inputs)")
    accelerator = make_accelerator("no", cpu=device.type == "cpu")
    upscale, scale, name = _what_to_score(args, accelerator.device)
    sets = load_sets(args.sets, scale, args.data_root, args.max_images)
    networks = {"": upscale}
    if args.self_ensemble:
        networks[ENSEMBLE_SUFFIX] = SelfEnsemble(upscale)
    # Each image once, over the processes; the ensemble's rows after the plain ones.
    results = {name + suffix: score_set(dataset, network, args.protocol, accelerator)
               for suffix, network in networks.items() for name, dataset in sets.items()}
    if accelerator.is_main_process:
        if args.json:
            print(json.dumps(_json_safe(results), allow_nan=False))
        else:
            print(f"model: {name}")
            print(format_table(results, args.protocol, scale))
    return results


def _json_safe(value: Any) -> Any:
    """``value`` with infinite and NaN floats as None: JSON has no Infinity (an exact image's PSNR)."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    return run_cli(_evaluate, parse_args(argv))


if __name__ == "__main__":
    main()
