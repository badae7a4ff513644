"""Upscale your own images with a trained SR model.

    python -m tasks.sr.upscale --checkpoint runs/sr-t91/ --input photos/ --output-dir photos_x4/

``--checkpoint`` takes a run folder (best checkpoint), a checkpoint folder or its ``network.json``.
``--input`` is one image or a folder (searched recursively, linked folders included); outputs are
PNGs with the input's relative path, so ``photo.jpg`` gives ``photo.png``. Two inputs that would
give one output (``photo.png`` and ``photo.jpg``) and an output that would replace an input
(``--output-dir`` equal to ``--input``, or a folder inside it that holds inputs of the same names) are
refused before anything is written. ``--self-ensemble`` writes the mean over the 8 flips and
rotations of each image (EDSR's "+"), for 8 times the compute.

An image whose pass would not fit in the free memory (an estimate from the network's largest
activation; on the CPU the least of the system's, the cgroup's and ``ulimit -v``'s room) is
processed in tiles, with a note; ``--tile N`` sets the tile size in LR pixels, ``--tile 0`` turns
tiling off. Each tile runs with the network's receptive field of context around it and only its
centre is kept, written straight into the 8-bit output, so memory grows with the tile, not with
the image. Without attention the tiles give the whole-image result (up to float rounding); with
BAM (or SE, CBAM) they do not quite: the channel attention averages over each tile instead of the
whole image.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks.common.cli import add_device_arg, non_negative_int, run_cli
from tasks.common.model_io import load_model
from tasks.data.images import list_images, read_rgb
from tasks.sr.ensemble import SelfEnsemble
from tasks.utils.files import WriteError, check_writable, write_png_atomic
from tasks.utils.formatting import byte_size
from tasks.utils.images import to_hwc_uint8
from tasks.utils.messages import note
from tasks.utils.progress import progress

# A forward pass in float32 on the CPU peaked at 2.4-3.7 times its largest activation (SRResNet,
# 8 to 64 channels, measured with ru_maxrss); 6 times with 4 channels, where the 3-channel image
# tensors weigh as much. The rounding to 8 bits, after the pass, takes about 20 bytes per output
# value (the float32 output and two float64 copies).
_ACTIVATION_COPIES = 4
_ROUNDING_BYTES = 20
_MEMORY_SHARE = 0.5  # of the free memory a pass may plan to use: the estimate is rough
_BICUBIC_CONTEXT = 2  # LR pixels each side that the bicubic path of global_residual reads (4 taps)
_PROBE = 32  # LR side of the probe image the network is profiled on


@dataclass(frozen=True)
class NetworkProfile:
    """What tiling needs to know about a network, from one pass over a small probe image."""

    context: int  # LR pixels of receptive field on each side of an output pixel
    bytes_per_pixel: float  # estimated peak memory of a pass, per LR pixel
    global_pooling: bool  # some layer sees the image pooled to one value per channel (attention)


@torch.no_grad()
def profile_network(model: torch.nn.Module, scale: int) -> NetworkProfile:
    """Profile ``model`` (on its device) with hooks on its layers: the receptive field from their
    kernels (in LR pixels: a layer after a 2x upsampling adds half its radius), the largest
    activation per LR pixel, and whether any layer sees globally pooled features."""
    parameter = next(model.parameters())
    context, largest, pooled = 0.0, 0.0, False

    def measure(module, inputs, output) -> None:
        nonlocal context, largest, pooled
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if x is not None and (x.dim() < 4 or x.shape[-2:] == (1, 1)):
            pooled = True
        if x is not None and x.dim() == 4 and hasattr(module, "kernel_size"):  # an int or a pair
            radius = np.max(getattr(module, "dilation", 1)) * (np.max(module.kernel_size) - 1) / 2
            context += radius * _PROBE / x.shape[-1]
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() / _PROBE**2)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(measure) for m in leaves]
    try:
        with getattr(model, "layer_by_layer", contextlib.nullcontext)():  # every layer called as drawn
            model(torch.zeros(1, 3, _PROBE, _PROBE, device=parameter.device, dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
    per_pixel = max(parameter.element_size() * _ACTIVATION_COPIES * largest, _ROUNDING_BYTES * 3 * scale**2)
    return NetworkProfile(math.ceil(context) + _BICUBIC_CONTEXT, per_pixel, pooled)


def choose_tile(profile: NetworkProfile, height: int, width: int, free_bytes: float) -> int:
    """0 when a pass over the whole image fits in the planned share of ``free_bytes``; else the
    largest tile side (a multiple of 16 LR pixels, at least 16) whose pass, context included, fits."""
    budget = _MEMORY_SHARE * free_bytes
    if profile.bytes_per_pixel * height * width <= budget:
        return 0
    side = int(math.sqrt(max(budget, 0) / profile.bytes_per_pixel)) - 2 * profile.context
    return max(16, side // 16 * 16)


def free_memory(device: torch.device) -> float:
    """Bytes this process may still allocate on ``device`` (inf when nothing says): a GPU's free
    memory; on the CPU the least of the system's available memory, the room under this process's
    cgroup limits (a SLURM job's, a container's) and under ``ulimit -v``."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    available = _proc_bytes("/proc/meminfo", "MemAvailable")
    return float(min([available, *_cgroup_room(), _address_space_room()]))


def _proc_bytes(file: str, field: str) -> float:
    """The ``field:  N kB`` line of a /proc file, in bytes; inf where there is none."""
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path(file).read_text(), re.M)
    except OSError:
        return math.inf
    return int(found.group(1)) * 1024 if found else math.inf


def _cgroup_room() -> list[int]:
    """Limit less usage of each cgroup (v2, or v1's memory controller) from this process's up."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    room = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not controllers:
            base, limit_name, usage_name = Path("/sys/fs/cgroup"), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base, limit_name, usage_name = (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes",
                                            "memory.usage_in_bytes")
        else:
            continue
        folder = base / path.lstrip("/")
        for level in (folder, *folder.parents):
            with contextlib.suppress(OSError, ValueError):  # not mounted at this level
                limit = (level / limit_name).read_text().strip()
                if limit.isdigit():  # "max": no limit at this level
                    room.append(int(limit) - int((level / usage_name).read_text()))
            if level == base:
                break
    return room


def _address_space_room() -> float:
    try:
        import resource
    except ImportError:  # not a Unix
        return math.inf
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    used = _proc_bytes("/proc/self/status", "VmSize")
    return math.inf if limit == resource.RLIM_INFINITY or used == math.inf else limit - used


@torch.no_grad()
def upscale_image(model: torch.nn.Module, image: np.ndarray, scale: int, tile: int = 0,
                  context: int = 0) -> np.ndarray:
    """An HxWx3 uint8 LR image -> the (sH)x(sW)x3 uint8 SR image, on the model's device.

    ``tile > 0`` runs tile x tile LR pieces, each with ``context`` LR pixels of the image around it
    (the receptive field: :func:`profile_network`) and keeps their centres, each rounded straight
    into the 8-bit output.
    """
    height, width = image.shape[:2]
    if tile <= 0 or tile >= max(height, width):
        tile, context = max(height, width), 0
    device = next(model.parameters()).device
    out = np.empty((height * scale, width * scale, 3), np.uint8)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            t0, l0 = max(top - context, 0), max(left - context, 0)
            t1, l1 = min(bottom + context, height), min(right + context, width)
            lr = torch.from_numpy(image[t0:t1, l0:l1]).to(device).permute(2, 0, 1)[None].float().div_(255)
            sr = model(lr).clamp_(0, 1)  # SR outputs overshoot [0, 1] at sharp edges
            centre = sr[:, :, (top - t0) * scale:(bottom - t0) * scale, (left - l0) * scale:(right - l0) * scale]
            # Rounded by the rule the metrics use on SR outputs (MATLAB's uint8: round half up).
            out[top * scale:bottom * scale, left * scale:right * scale] = to_hwc_uint8(centre)
    return out


def _inputs_and_targets(path: Path, output: Path) -> tuple[list[Path], list[Path]]:
    """The images to upscale and the PNG each is written to; two inputs with one output, or an
    output that would replace an input, are refused (both before anything is written)."""
    if not path.exists():
        raise FileNotFoundError(f"--input {path} does not exist")
    if path.is_file():
        files, base = [path], path.parent
    elif output.resolve() == path.resolve():
        raise ValueError(f"--output-dir {output} is the --input folder: the upscaled PNGs would replace or mix with the "
                         "originals; choose another folder")
    else:
        files, base = list_images(path), path
    inputs = {file.resolve(): file for file in files}
    first_of: dict[Path, Path] = {}  # target: its input, in the order of the inputs
    for file in files:
        target = (output / file.relative_to(base)).with_suffix(".png")
        if target in first_of:
            raise ValueError(f"{first_of[target]} and {file} would both be upscaled to {target}: rename one of them "
                             "or upscale them separately")
        if target.resolve() in inputs:
            raise ValueError(f"--output-dir {output}: writing {target} would replace the input "
                             f"{inputs[target.resolve()]}; choose an --output-dir outside the input folder")
        first_of[target] = file
    return files, list(first_of)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tasks.sr.upscale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="network.json, checkpoint folder or run folder")
    parser.add_argument("--input", required=True, help="an image or a folder of images")
    parser.add_argument("--output-dir", required=True, help="folder for the SR PNGs")
    add_device_arg(parser)
    parser.add_argument("--self-ensemble", action="store_true",
                        help="the mean over the 8 flips and rotations of each image (8 times the compute)")
    parser.add_argument("--tile", type=non_negative_int, default=None,
                        help="LR tile size (default: tiles only for images that would not fit in memory; 0: never)")
    return parser.parse_args(argv)


def _out_of_memory(file: Path, image: np.ndarray, scale: int, tile: int, device: torch.device,
                   error: BaseException) -> ValueError:
    height, width = image.shape[:2]
    reason = " ".join(str(error).split())[:200]
    hint = (f"try a smaller --tile (e.g. --tile {max(16, tile // 2)})" if 0 < tile < max(height, width)
            else "leave --tile out to tile automatically, or give e.g. --tile 256")
    return ValueError(f"not enough memory on {device} to upscale {file} ({width}x{height}, output "
                      f"{width * scale}x{height * scale}: {byte_size(height * width * scale**2 * 3)} in 8 bits alone): "
                      f"{reason}; {hint}, or free memory")


def _tiling_note(file: Path, image: np.ndarray, profile: NetworkProfile, tile: int, free: float,
                 device: torch.device) -> str:
    height, width = image.shape[:2]
    result = ("the network pools over the whole image (attention), so tiles change its result slightly"
              if profile.global_pooling else "the result is the whole image's")
    return (f"{file} ({width}x{height}) would need about {byte_size(profile.bytes_per_pixel * height * width)} to "
            f"upscale whole, more than half of the {byte_size(free)} free on {device}: upscaling in {tile}x{tile} tiles "
            f"({result}; --tile N sets the size, --tile 0 turns tiling off)")


def _upscale_files(args: argparse.Namespace) -> int:
    output = Path(args.output_dir).expanduser()
    files, targets = _inputs_and_targets(Path(args.input).expanduser(), output)
    output = check_writable(output, "--output-dir")  # before anything is loaded or computed
    device = torch.device(args.device)
    model = load_model(args.checkpoint, map_location="cpu", task="sr")[0].to(device).eval()
    scale = model.scale
    profile = profile_network(model, scale)  # the ensemble runs the same network, one transform at a time
    if args.self_ensemble:
        model = SelfEnsemble(model)
    noted = False
    for done, (file, target) in enumerate(progress(list(zip(files, targets)), desc=f"upscaling x{scale}", unit="img")):
        image = read_rgb(file)
        tile = args.tile
        if tile is None:  # tiles only when the whole image would not fit, said once
            free = free_memory(device)
            tile = choose_tile(profile, image.shape[0], image.shape[1], free)
            if tile and not noted:
                note(_tiling_note(file, image, profile, tile, free, device))
                noted = True
        try:
            sr = upscale_image(model, image, scale, tile, profile.context)
        except (MemoryError, RuntimeError) as error:
            # The CPU allocator raises a plain RuntimeError ("DefaultCPUAllocator: can't allocate")
            failed = isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "allocate" in str(error)
            if not failed:
                raise
            raise _out_of_memory(file, image, scale, tile, device, error) from None
        try:
            write_png_atomic(target, sr)  # never a half-written PNG
        except OSError as error:  # a full disk mid-way: what was written is complete and kept
            raise WriteError(f"could not write {target} ({error.strerror or error}); the {done} image(s) before it "
                             f"are complete in {output}") from error
    print(f"wrote {len(files)} image(s) upscaled x{scale} to {output}")
    return len(files)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_upscale_files, parse_args(argv))


if __name__ == "__main__":
    main()
