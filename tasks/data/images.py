"""Reading images from disk into 8-bit arrays, whatever their mode; every loader uses ``read_rgb``.

* gray is replicated to three channels and alpha is dropped, not composited (as OpenCV's
  ``IMREAD_COLOR`` and BasicSR); palette images are expanded through their palette;
* 16-bit values map to ``round(v * 255 / 65535)``: Pillow clips 16-bit gray and keeps the high byte
  of 16-bit RGB, so 16-bit PNGs are decoded by OpenCV and 16-bit TIFFs by ``tifffile``;
* EXIF orientation is applied (``exif=False`` keeps the stored pixel grid, which label maps and
  boxes refer to);
* a missing file raises ``FileNotFoundError``, an unreadable one ``ValueError``; both name the file.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from tasks.utils.images import quantize

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has one of the supported image extensions."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files of ``folder`` (and its sub-folders when ``recursive``, linked ones too).

    Hidden files and folders (names starting with '.') are skipped.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    candidates = _walk(folder) if recursive else (p for p in folder.iterdir() if not p.name.startswith("."))
    files = sorted(p for p in candidates if p.is_file() and is_image_file(p))
    if not files:
        kinds = "/".join(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
        where = " (searched recursively)" if recursive else ""
        raise ValueError(f"no images ({kinds}) in folder {folder}{where}")
    return files


def _walk(folder: Path) -> Iterator[Path]:
    """The non-hidden files under ``folder``, through linked folders (a data set assembled from
    links is common), each real folder once: a link back to a parent folder would loop for ever."""
    seen: set[tuple[int, int]] = set()
    for root, folders, names in os.walk(folder, followlinks=True):
        status = os.stat(root)
        if (status.st_dev, status.st_ino) in seen:
            folders.clear()
            continue
        seen.add((status.st_dev, status.st_ino))
        folders[:] = [name for name in folders if not name.startswith(".")]
        yield from (Path(root, name) for name in names if not name.startswith("."))


def read_rgb(path: str | os.PathLike, exif: bool = True) -> np.ndarray:
    """Read an image as a ``uint8`` array of shape (H, W, 3); see the module docstring."""
    image = read_image(path, exif=exif)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image


def read_image(path: str | os.PathLike, exif: bool = True) -> np.ndarray:
    """Read an image as ``uint8``: (H, W) for single-channel files, (H, W, 3) otherwise.

    Same conventions as :func:`read_rgb` except that grayscale files stay 2-D, which the older
    "Y-only" SR protocol needs (it scores gray images on their raw values).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not an image file (is a folder?): {path}")
    try:
        array = _decode(path, exif)
    except (ValueError, OSError, SyntaxError, zlib.error, struct.error,
            Image.DecompressionBombError) as error:
        # Pillow signals truncated or corrupt data with OSError (SyntaxError for broken headers;
        # zlib.error and struct.error can escape from its parsing of compressed or short chunks).
        if isinstance(error, ValueError) and str(path) in str(error):
            raise  # ours, naming the file already
        raise ValueError(f"cannot read image {path}: {error}") from error
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()  # torch.from_numpy wants writable


def _decode(path: Path, exif: bool = True) -> np.ndarray:
    png16 = _png16_header(path)
    if png16 is not None:
        return _normalize(_read_png16(path, *png16), path)
    if path.suffix.lower() in (".tif", ".tiff"):
        array = _read_tiff(path)
        if array is not None:
            return _normalize(array, path)
    with Image.open(path) as image:
        image.load()  # Image.open is lazy: truncated data only shows up when pixels are decoded
        if exif:
            image = ImageOps.exif_transpose(image)
        return _normalize(_pil_to_array(image), path)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """Pixels as Pillow stores them (bool, 16-bit or float gray are scaled by _normalize, alpha
    dropped there); palette and premultiplied-alpha modes through RGBA or LA (a palette with
    transparency converts to RGB only with a warning); CMYK, YCbCr, LAB, HSV through RGB."""
    if image.mode in ("1", "L", "LA", "RGB", "RGBA", "RGBX", "F") or image.mode.startswith("I"):
        return np.asarray(image)
    converted = {"La": "LA", "P": "RGBA", "PA": "RGBA", "RGBa": "RGBA"}.get(image.mode, "RGB")
    return np.asarray(image.convert(converted))


def _normalize(array: np.ndarray, path: Path) -> np.ndarray:
    """Channels to gray (H, W) or RGB (H, W, 3); values to uint8."""
    if array.ndim == 3:
        channels = array.shape[2]
        if channels in (1, 2):
            array = array[:, :, 0]  # gray (+ alpha)
        elif channels in (3, 4):
            array = array[:, :, :3]  # RGB (+ alpha)
        else:
            raise ValueError(f"unsupported image {path}: {channels} channels")
    elif array.ndim != 2:
        raise ValueError(f"unsupported image {path}: array of shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 65535:
            raise ValueError(f"unsupported image {path}: integer values outside 0..65535")
        # round(v * 255 / 65535) = round(v / 257), exact in integer arithmetic (no ties exist)
        return ((2 * array.astype(np.int64) + 257) // 514).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"unsupported image {path}: float pixels must lie in [0, 1]")
        # astype copies: torch.from_numpy warns on the read-only arrays Pillow hands out
        return quantize(torch.from_numpy(array.astype(np.float64))).numpy()
    raise ValueError(f"unsupported image {path}: pixel type {array.dtype}")


def _read_tiff(path: Path) -> np.ndarray | None:
    """16-bit and float TIFFs through tifffile (Pillow truncates 16-bit RGB); None -> use Pillow."""
    import tifffile  # installed with scikit-image

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if page.dtype == np.uint8 or page.dtype is None:
                return None  # Pillow handles 8-bit TIFFs (and their EXIF orientation) fine
            array = page.asarray()
            if array.ndim == 3 and page.planarconfig == 2:  # planar storage: (C, H, W)
                array = np.moveaxis(array, 0, -1)
            return array
    except Exception:  # compressed with a codec tifffile lacks, or not a TIFF: let Pillow try
        return None


def _png16_header(path: Path) -> tuple[int, int, int] | None:
    """``(width, height, colour type)`` of a 16-bit PNG file; None for any other file."""
    with open(path, "rb") as handle:
        header = handle.read(26)
    if len(header) < 26 or not header.startswith(b"\x89PNG\r\n\x1a\n") or header[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", header[16:26])
    return (width, height, colour_type) if bit_depth == 16 else None


def _read_png16(path: Path, width: int, height: int, colour_type: int) -> np.ndarray:
    """A 16-bit PNG's samples as uint16 (OpenCV hands them over; Pillow keeps only the high byte):
    (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA."""
    import cv2  # here, not at the top: ~0.1 s per DataLoader worker, and only 16-bit PNGs need it

    # Absurd sizes refused before decoding: a corrupt header must not allocate terabytes.
    if width == 0 or height == 0:
        raise ValueError(f"corrupt PNG file {path} (size {width}x{height})")
    limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    if limit and width * height > limit:  # the limit Pillow applies to every other file
        raise ValueError(f"image {path} is {width}x{height} pixels, over Pillow's "
                         f"decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")
    # imdecode over bytes read by numpy, not imread: OpenCV's imread fails on non-ASCII paths
    # on Windows.
    try:
        array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ValueError(f"corrupt PNG file {path} ({error})") from error
    if array is None:  # libpng stopped: data cut short, bad checksum, broken compressed stream
        raise ValueError(f"truncated or corrupt PNG file {path}")
    if array.ndim == 3 and colour_type in (0, 4):  # gray (+ alpha), handed over as BGR(A)
        return array[:, :, 0]  # a gray file stays 2-D (read_image's contract), alpha dropped
    if array.ndim == 3:
        return array[:, :, [2, 1, 0, 3][:array.shape[2]]]  # BGR(A) back to RGB(A)
    return array
