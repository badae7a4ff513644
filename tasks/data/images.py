"""Reading images from disk into 8-bit RGB arrays, whatever their mode.

``read_rgb`` is the single entry point every loader uses. Conventions:

* grayscale is replicated to three channels (as OpenCV's ``IMREAD_COLOR`` and BasicSR do);
* alpha is dropped, not composited: the colour stored under a transparent pixel is kept, so
  an RGBA file and its RGB version give the same pixels (again as BasicSR/OpenCV);
* palette images are expanded through their palette;
* 16-bit images are mapped to 8 bits by ``round(v * 255 / 65535)``. Pillow's own conversion
  of 16-bit data clips (mode ``I;16`` -> ``L``) or keeps the high byte (16-bit RGB PNGs), so
  16-bit PNGs are decoded by OpenCV (libpng: every colour type, interlaced or not) and 16-bit
  TIFFs by ``tifffile``; Pillow reads everything else;
* EXIF orientation is applied, so photos come out the way viewers show them (``exif=False``
  keeps the stored pixel grid, which annotations such as label maps and boxes refer to);
* a missing file raises ``FileNotFoundError``; an unreadable, truncated or unsupported file raises
  ``ValueError``; both name the file.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from tasks.utils.images import quantize

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image", "read_rgb", "is_image_file"]


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
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"cannot read image {path}: {error}") from error
    except (OSError, SyntaxError, zlib.error, struct.error, Image.DecompressionBombError) as error:
        # Pillow signals truncated or corrupt data with OSError (SyntaxError for broken headers;
        # zlib.error and struct.error can escape from its parsing of compressed or short chunks).
        raise ValueError(f"cannot read image {path}: {error}") from error
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()  # torch.from_numpy wants writable


def _decode(path: Path, exif: bool = True) -> np.ndarray:
    with open(path, "rb") as handle:
        png = _png_header(handle.read(32))
    if png is not None and png.bit_depth == 16:
        return _normalize(_read_png16(path, png), path)
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
    mode = image.mode
    if mode in ("1", "L", "RGB"):
        return np.asarray(image.convert("L") if mode == "1" else image)
    if mode in ("LA", "La"):
        return np.asarray(image.convert("LA"))[:, :, 0]
    if mode in ("P", "PA"):
        # Through RGBA: a palette with transparency converts to RGB only with a warning.
        return np.asarray(image.convert("RGBA"))[:, :, :3]
    if mode in ("RGBA", "RGBa", "RGBX"):
        return np.asarray(image.convert("RGBA"))[:, :, :3]
    if mode.startswith("I") or mode == "F":
        return np.asarray(image)  # integer (16-bit) or float gray: scaled by _normalize
    return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV


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
    try:
        import tifffile
    except ImportError:
        return None
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


# --- 16-bit PNG ---------------------------------------------------------------------------------
# Pillow decodes 16-bit RGB(A) PNGs by keeping the high byte of each sample (floor(v / 256)),
# which is off by one level from round(v / 257) on many pixels; OpenCV hands over the 16-bit
# samples themselves.

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GRAY_TYPES = (0, 4)  # PNG colour types gray and gray + alpha (OpenCV hands the latter over as BGRA)
_FROM_BGRA = [2, 1, 0, 3]  # OpenCV's channel order back to RGB(A)


class _PngHeader(NamedTuple):
    width: int
    height: int
    bit_depth: int
    colour_type: int


def _png_header(header: bytes) -> _PngHeader | None:
    """The IHDR fields of a PNG file's first 26 bytes; None when it is not a PNG file."""
    if len(header) < 26 or not header.startswith(_PNG_SIGNATURE) or header[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", header[16:26])
    return _PngHeader(width, height, bit_depth, colour_type)


def _check_png_size(path: Path, png: _PngHeader) -> None:
    """Refuse absurd sizes before decoding: a corrupt header must not allocate terabytes."""
    if png.width == 0 or png.height == 0:
        raise ValueError(f"corrupt PNG file {path} (size {png.width}x{png.height})")
    limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    if limit and png.width * png.height > limit:  # the limit Pillow applies to every other file
        raise ValueError(f"image {path} is {png.width}x{png.height} pixels, over Pillow's "
                         f"decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")


def _read_png16(path: Path, png: _PngHeader) -> np.ndarray:
    """A 16-bit PNG's samples as uint16: (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA."""
    import cv2  # here, not at the top: ~0.1 s per DataLoader worker, and only 16-bit PNGs need it

    _check_png_size(path, png)
    # imdecode over bytes read by numpy, not imread: OpenCV's imread fails on non-ASCII paths
    # on Windows.
    try:
        array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ValueError(f"corrupt PNG file {path} ({error})") from error
    if array is None:  # libpng stopped: data cut short, bad checksum, broken compressed stream
        raise ValueError(f"truncated or corrupt PNG file {path}")
    if array.ndim == 3 and png.colour_type in _GRAY_TYPES:
        return array[:, :, 0]  # a gray file stays 2-D (read_image's contract), alpha dropped
    if array.ndim == 3:
        return array[:, :, _FROM_BGRA[:array.shape[2]]]
    return array
