"""Super-resolution data: training folders, benchmark sets, sub-image preparation.

Every LR image made here is MATLAB's bicubic (``tasks.data.imresize``) rounded to 8 bits, for
training crops and benchmarks alike. Items are dicts of float32 CxHxW tensors in [0, 1]:
``{"lr": ..., "hr": ...}``. Training sets take a key ``(index, sample_seed)``
(:mod:`tasks.data.sampling`) from which the crop, flips and rotation are drawn, so a resumed run
sees the same patches whatever the number of workers; a plain index uses torch's global generator.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tasks.data.images import list_images, read_image, read_rgb, is_image_file
from tasks.data.imresize import bicubic_degrade, modcrop
from tasks.data.root import data_root as resolve_data_root
from tasks.data.sampling import key_generator
from tasks.utils.files import write_png_atomic
from tasks.utils.messages import warn
from tasks.utils.processes import is_main_process
from tasks.utils.progress import progress

KNOWN_BENCHMARKS = ("Set5", "Set14", "B100", "Urban100", "Manga109")
EMBEDDED_BENCHMARK = "embedded"  # held-out scikit-image photographs (tasks.data.embedded)
_ALIASES = {"b100": ("B100", "BSD100", "BSDS100"), "bsd100": ("BSD100", "B100", "BSDS100")}
_HR_SUBFOLDERS = ("HR", "GTmod12", "GT", "original", "hr")


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not float(scale).is_integer() or int(scale) < 1:
        raise ValueError(f"scale must be a positive integer, got scale={scale!r}")
    return int(scale)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def random_patch(image: np.ndarray, patch_size: int, augment: bool = True,
                 generator: torch.Generator | None = None) -> np.ndarray:
    """A random ``patch_size`` square of an (H, W, 3) image at least that large; ``augment``: one
    of the 8 symmetries of the square (random horizontal flip, vertical flip and transpose, as in
    BasicSR)."""
    h, w = image.shape[:2]
    top = int(torch.randint(0, h - patch_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - patch_size + 1, (1,), generator=generator))
    patch = image[top:top + patch_size, left:left + patch_size]
    if augment:
        hflip, vflip, transpose = torch.randint(0, 2, (3,), generator=generator).tolist()
        patch = patch[:, ::-1] if hflip else patch
        patch = patch[::-1] if vflip else patch
        patch = patch.transpose(1, 0, 2) if transpose else patch
    return patch


def _collect_files(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files: list[Path] = []
    for source in sources:
        source = Path(source).expanduser()
        if source.is_file():
            if not is_image_file(source):
                raise ValueError(f"not an image file: {source}")
            files.append(source)
        else:
            files.extend(list_images(source, recursive=True))  # errors name missing/empty folders
    if not files:
        raise ValueError("no training images given (empty list of folders)")
    return files


def _progress(items, quiet: bool = False, **kwargs):
    return progress(items, main_process=is_main_process() and not quiet, leave=False, **kwargs)


class SRTrainFolder(Dataset):
    """Random HR crops of the images in one or more folders (searched recursively), each with its
    LR input made by MATLAB bicubic rounded to 8 bits.

    Args:
        folders: a folder, an image file, or a list of them.
        scale: SR factor. patch_size: HR crop side, a multiple of ``scale``.
        augment: random flips and 90-degree rotations.
        cache: decode every image once and keep it in memory (small sets such as T91).
        repeat: visit each image ``repeat`` times per epoch (longer epochs for small sets).

    Images smaller than the crop are left out with a warning (T91 has 78x78 images); a set with
    none large enough raises ``ValueError``. Sizes are read from the file headers (no decoding).
    """

    def __init__(self, folders, scale: int = 4, patch_size: int = 96, augment: bool = True,
                 cache: bool = False, repeat: int = 1) -> None:
        # scale, patch_size and repeat are checked where they are set (tasks.sr.train's options).
        self.scale, self.patch_size, self.augment, self.repeat = scale, patch_size, augment, repeat
        files = _collect_files(folders)
        sizes = [_header_size(f) for f in _progress(files, desc="checking sizes", quiet=len(files) <= 2000)]
        small = [(f, s) for f, s in zip(files, sizes) if min(s) < self.patch_size]
        self.files = [f for f, s in zip(files, sizes) if min(s) >= self.patch_size]
        crop = f"the {self.patch_size}x{self.patch_size} HR crop (patch_size={self.patch_size})"
        if not self.files:
            (path, (w, h)), more = small[0], len(small) - 1
            also = f" (and {more} more of {len(files)} images)" if more else ""
            raise ValueError(f"image {path} is {w}x{h}, smaller than {crop}{also}; "
                             "remove it or lower the patch size")
        if small:
            names = ", ".join(p.name for p, _ in small[:5]) + (" ..." if len(small) > 5 else "")
            warn(f"skipping {len(small)} of {len(files)} images smaller than {crop}: {names}")
        self._images = [read_rgb(f) for f in _progress(self.files, desc="decoding images")] if cache else None

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, generator = key_generator(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self.files)
        image = self._images[index] if self._images is not None else read_rgb(self.files[index])
        hr = _to_tensor(random_patch(image, self.patch_size, self.augment, generator))
        return {"lr": bicubic_degrade(hr, self.scale).float().div_(255), "hr": hr.float().div_(255)}


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


# --- benchmark sets ------------------------------------------------------------------------------

def _benchmark_files(folder: Path, scale: int) -> list[Path]:
    """HR files of a benchmark folder in any of the usual layouts."""
    for sub in _HR_SUBFOLDERS:
        if (folder / sub).is_dir():
            return list_images(folder / sub, recursive=False)
    srf = [folder / f"image_SRF_{scale}"] + sorted(folder.glob("image_SRF_*"))
    for sub in filter(Path.is_dir, srf):  # Huang et al.: image_SRF_<s>/img_001_SRF_<s>_HR.png
        hr = [f for f in list_images(sub, recursive=False) if f.stem.endswith("_HR")]
        if hr:
            return hr
    if not folder.is_dir():
        raise FileNotFoundError(f"benchmark folder not found: {folder}")
    try:
        files = list_images(folder, recursive=False)
    except ValueError:
        looked = f"in it, in {'/, '.join(_HR_SUBFOLDERS)}/ and in image_SRF_{scale}/*_HR.png"
        raise ValueError(f"no HR images in benchmark folder {folder} (looked {looked})") from None
    return [f for f in files if f.stem.endswith("_HR")] or files


def find_benchmark(name_or_dir: str | os.PathLike, scale: int = 4,
                   data_root: str | os.PathLike | None = None) -> tuple[str, list[Path]]:
    """(set name, HR files) of a benchmark given by folder path or by name under ``<root>/sr``."""
    if str(name_or_dir) == EMBEDDED_BENCHMARK:
        from tasks.data.embedded import embedded_sr_files

        return EMBEDDED_BENCHMARK, embedded_sr_files("test")
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path.name, _benchmark_files(path, scale)
    base = resolve_data_root(data_root) / "sr"
    name = str(name_or_dir)
    folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    for want in _ALIASES.get(name.lower(), (name,)):
        for folder in folders:
            if folder.name.lower() == want.lower():
                return folder.name, _benchmark_files(folder, scale)
    found = ", ".join(list_benchmarks(data_root, scale)) or "none"
    raise FileNotFoundError(
        f"benchmark set {name!r} not found: no folder {base / name} (sets found there: {found}); "
        f"pass a folder path, or point --data-root / $BAM_DATA_ROOT at the folder holding sr/{name}")


def list_benchmarks(data_root: str | os.PathLike | None = None, scale: int = 4) -> list[str]:
    """Names of the benchmark sets under ``<data root>/sr`` (every folder but ``train`` that holds
    HR images in one of the usual layouts)."""
    base = resolve_data_root(data_root) / "sr"
    if not base.is_dir():
        return []
    names = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and p.name != "train"):
        try:
            _benchmark_files(folder, scale)
        except (FileNotFoundError, ValueError):
            continue
        names.append(folder.name)
    known = [n.lower() for n in KNOWN_BENCHMARKS]  # the usual table order first, then the rest
    return sorted(names, key=lambda n: (known.index(n.lower()) if n.lower() in known else len(known), n))


class SRBenchmark(Dataset):
    """An SR test set: HR cropped to a multiple of ``scale``, LR remade from it by MATLAB bicubic
    (uint8) as for training (LR files shipped with a set are ignored).

    ``name_or_dir``: a set name under ``<data_root>/sr`` (case-insensitive), a folder in one of the
    usual layouts (flat, ``HR/``, ``GTmod12/``, ``original/``, ``image_SRF_<s>/*_HR.png``), or
    ``"embedded"``. Items (computed once, kept in memory): ``{"name", "lr", "hr", "gray", "scale"}``,
    ``gray`` telling whether the file was single-channel (the Y-only protocol scores those raw).
    """

    def __init__(self, name_or_dir, scale: int = 4, data_root=None) -> None:
        self.scale = _check_scale(scale)
        self.name, self.files = find_benchmark(name_or_dir, self.scale, data_root)
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        if index not in self._items:
            path = self.files[index]
            image = read_image(path)
            gray = image.ndim == 2
            image = np.repeat(image[:, :, None], 3, axis=2) if gray else image
            hr = modcrop(_to_tensor(image), self.scale)
            if min(hr.shape[-2:]) < self.scale:
                raise ValueError(f"benchmark image {path} is smaller than the scale {self.scale}")
            lr = bicubic_degrade(hr, self.scale)
            name = re.sub(r"(?:_SRF_\d+)?_HR$", "", path.stem)  # img_001_SRF_4_HR -> img_001
            self._items[index] = {"name": name, "lr": lr.float().div_(255),
                                  "hr": hr.float().div_(255), "gray": gray, "scale": self.scale}
        return self._items[index]


# --- preparation -------------------------------------------------------------------------------

def _starts(length: int, size: int, step: int) -> list[int]:
    starts = list(range(0, max(length - size, 0) + 1, step))  # [0] when the image is not larger
    if starts[-1] + size < length:
        starts.append(length - size)  # cover the far border too
    return starts


def prepare_subimages(src: str | os.PathLike, dst: str | os.PathLike, size: int = 480, step: int = 240) -> int:
    """Cut every image of ``src`` (recursive) into overlapping ``size`` x ``size`` RGB PNGs in
    ``dst`` (BasicSR-style extraction): ``<relative folder>/<stem>_s001.png``, ... Images smaller
    than ``size`` are kept whole. Existing outputs are skipped, so an interrupted run resumes;
    each file is written atomically, so a killed run leaves no torn PNG that would count as done.
    Returns the number of sub-images written."""
    if int(size) <= 0 or int(step) <= 0:
        raise ValueError(f"size and step must be positive, got size={size}, step={step}")
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    files = list_images(src)
    if dst.resolve().is_relative_to(src.resolve()):
        raise ValueError(f"destination {dst} lies inside the source folder {src}")
    seen: dict[Path, Path] = {}
    for path in files:  # a.png and a.jpg would both write a_s001.png: the second would be skipped
        stem = path.relative_to(src).with_suffix("")
        if stem in seen:
            raise ValueError(f"{seen[stem]} and {path} would write the same sub-images "
                             f"({stem}_s001.png, ...); rename one of them")
        seen[stem] = path
    written = 0
    for path in _progress(files, desc="extracting sub-images", unit="img"):
        folder = dst / path.relative_to(src).parent
        width, height = _header_size(path)
        if all(t.exists() for t, _, _ in _tiles(folder, path.stem, height, width, size, step)):
            continue  # done by an earlier, interrupted run
        image = read_rgb(path)  # the decoded shape wins over the header (EXIF rotation)
        for target, top, left in _tiles(folder, path.stem, *image.shape[:2], size, step):
            if target.exists():
                continue
            # zlib level 3 writes twice as fast as Pillow's 6 for files about 3% larger
            write_png_atomic(target, image[top:top + size, left:left + size], compress_level=3)
            written += 1
    return written


def _tiles(folder: Path, stem: str, height: int, width: int, size: int, step: int):
    positions = [(top, left) for top in _starts(height, size, step) for left in _starts(width, size, step)]
    return [(folder / f"{stem}_s{k:03d}.png", top, left) for k, (top, left) in enumerate(positions, 1)]

