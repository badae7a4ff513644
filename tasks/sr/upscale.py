"""Upscale your own images with a trained SR model.

    python -m tasks.sr.upscale --checkpoint runs/sr-t91/ --input photos/ --output photos_x4/

``--checkpoint`` takes a run folder (best checkpoint), a checkpoint folder or its ``network.json``.
``--input`` is one image or a folder (searched recursively); outputs are PNGs with the input's
relative path. ``--tile N`` processes large images in N x N LR tiles (overlapping, seams cropped)
to bound memory. Without attention the tiles give the whole-image result; with BAM (or SE, CBAM)
they do not quite: the channel attention averages over each tile instead of the whole image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tasks.common.cli import run_cli
from tasks.utils.files import WriteError, check_writable, write_png_atomic
from tasks.utils.images import to_hwc_uint8
from tasks.utils.progress import progress

__all__ = ["upscale_image", "main"]

_TILE_OVERLAP = 16  # LR pixels of context kept around each tile, then cropped away


def _run(model: torch.nn.Module, lr: torch.Tensor) -> torch.Tensor:
    # Clamped before anything is pasted or rounded: SR outputs overshoot [0, 1] at sharp edges.
    return model(lr).clamp_(0, 1)


@torch.no_grad()
def upscale_image(model: torch.nn.Module, lr: torch.Tensor, scale: int, tile: int = 0) -> torch.Tensor:
    """1x3xHxW LR in [0, 1] -> 1x3x(sH)x(sW) SR in [0, 1]; ``tile > 0`` runs overlapping tiles."""
    _, _, h, w = lr.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return _run(model, lr)
    out = lr.new_zeros(1, 3, h * scale, w * scale)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            # Run the tile with a margin of context so the cropped centre equals the full-image result
            # up to the receptive field; paste only the centre.
            t0, l0 = max(top - _TILE_OVERLAP, 0), max(left - _TILE_OVERLAP, 0)
            t1, l1 = min(top + tile + _TILE_OVERLAP, h), min(left + tile + _TILE_OVERLAP, w)
            sr = _run(model, lr[:, :, t0:t1, l0:l1])
            bottom, right = min(top + tile, h), min(left + tile, w)
            out[:, :, top * scale:bottom * scale, left * scale:right * scale] = sr[
                :, :, (top - t0) * scale:(bottom - t0) * scale, (left - l0) * scale:(right - l0) * scale]
    return out


def _inputs(path: Path) -> tuple[list[Path], Path]:
    from tasks.data.images import list_images

    if path.is_file():
        return [path], path.parent
    if not path.exists():
        raise FileNotFoundError(f"--input {path} does not exist")
    return list_images(path), path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tasks.sr.upscale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="network.json, checkpoint folder or run folder")
    parser.add_argument("--input", required=True, help="an image or a folder of images")
    parser.add_argument("--output", required=True, help="folder for the SR PNGs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tile", type=int, default=0, help="LR tile size for large images (0: whole image)")
    return parser.parse_args(argv)


def _upscale_files(args: argparse.Namespace) -> int:
    from tasks.data.images import read_rgb
    from tasks.common.model_io import load_model

    output = check_writable(args.output, "--output")  # before anything is loaded or computed
    model, record = load_model(args.checkpoint, map_location="cpu", task="sr")
    files, base = _inputs(Path(args.input))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA GPU is available (use --device cpu)")
    model = model.to(device).eval()
    scale = int(record.kwargs.get("scale", getattr(model, "scale", 4)))
    for done, file in enumerate(progress(files, desc=f"upscaling x{scale}", unit="img")):
        lr = torch.from_numpy(read_rgb(file)).permute(2, 0, 1)[None].float().div(255).to(device)
        sr = upscale_image(model, lr, scale, tile=args.tile)
        target = (output / file.relative_to(base)).with_suffix(".png")
        try:
            # Rounded by the rule the metrics use on SR outputs (MATLAB's uint8: round half up).
            write_png_atomic(target, to_hwc_uint8(sr))  # never a half-written PNG
        except OSError as error:  # a full disk mid-way: what was written is complete and kept
            raise WriteError(f"could not write {target} ({error.strerror or error}); the {done} image(s) before it "
                             f"are complete in {output}") from error
    print(f"wrote {len(files)} image(s) upscaled x{scale} to {output}")
    return len(files)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_upscale_files, parse_args(argv))


if __name__ == "__main__":
    main()
