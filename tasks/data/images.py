"""Reading images from disk into 8-bit RGB arrays, whatever their mode.

``read_rgb`` is the single entry point every loader uses. Conventions:

* grayscale is replicated to three channels (as OpenCV's ``IMREAD_COLOR`` and BasicSR do);
* alpha is dropped, not composited: the colour stored under a transparent pixel is kept, so
  an RGBA file and its RGB version give the same pixels (again as BasicSR/OpenCV);
* palette images are expanded through their palette;
* 16-bit images are mapped to 8 bits by ``round(v * 255 / 65535)``. Pillow's own conversion
  of 16-bit data clips (mode ``I;16`` -> ``L``) or keeps the high byte (16-bit RGB PNGs), so
  16-bit PNGs are decoded here directly and 16-bit TIFFs through ``tifffile``;
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

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image", "read_rgb", "is_image_file"]


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has one of the supported image extensions."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files of ``folder`` (and its sub-folders when ``recursive``).

    Hidden files and folders (names starting with '.') are skipped.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(
        p for p in candidates
        if p.is_file() and is_image_file(p)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        kinds = "/".join(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
        where = " (searched recursively)" if recursive else ""
        raise ValueError(f"no images ({kinds}) in folder {folder}{where}")
    return files


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
        # Pillow signals truncated or corrupt data with OSError (or SyntaxError for broken headers).
        raise ValueError(f"cannot read image {path}: {error}") from error
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()  # torch.from_numpy wants writable


def _decode(path: Path, exif: bool = True) -> np.ndarray:
    with open(path, "rb") as handle:
        header = handle.read(32)
    if header.startswith(_PNG_SIGNATURE) and _png_bit_depth(header) == 16:
        return _normalize(_decode_png16(path), path)
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
        return np.floor(array.astype(np.float64) * 255 + 0.5).astype(np.uint8)
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


# --- 16-bit PNG decoder -------------------------------------------------------------------------
# Pillow decodes 16-bit RGB(A) PNGs by keeping the high byte of each sample (floor(v / 256)),
# which is off by one level from round(v / 257) on many pixels. The format is simple enough
# to decode here: zlib inflate + per-row filter reversal (+ Adam7 de-interlacing).

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAMPLES_PER_PIXEL = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples (16-bit has no palette)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # (x0, y0, dx, dy) of the seven interlace passes


def _png_bit_depth(header: bytes) -> int | None:
    if len(header) < 26 or header[12:16] != b"IHDR":
        return None
    return header[24]


def _decode_png16(path: Path) -> np.ndarray:
    data = path.read_bytes()
    position, idat, ihdr = len(_PNG_SIGNATURE), [], None
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if len(body) < length:
            raise ValueError(f"truncated PNG file {path} (chunk {kind!r} cut short)")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    else:
        raise ValueError(f"truncated PNG file {path} (no IEND chunk)")
    if ihdr is None or not idat:
        raise ValueError(f"corrupt PNG file {path} (missing IHDR or IDAT)")
    width, height, _, color_type, _, _, interlace = ihdr
    if color_type not in _SAMPLES_PER_PIXEL:
        raise ValueError(f"corrupt PNG file {path} (colour type {color_type} with 16 bits)")
    if width == 0 or height == 0:
        raise ValueError(f"corrupt PNG file {path} (size {width}x{height})")
    if Image.MAX_IMAGE_PIXELS and width * height > 2 * Image.MAX_IMAGE_PIXELS:
        # the limit Pillow applies to every other file (a corrupt header must not allocate TBs)
        raise ValueError(f"image {path} is {width}x{height} pixels, over Pillow's decompression-bomb "
                         f"limit of {2 * Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS)")
    samples = _SAMPLES_PER_PIXEL[color_type]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    out = np.zeros((height, width, 2 * samples), dtype=np.uint8)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    offset = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w <= 0 or h <= 0:
            continue
        size = h * (1 + w * 2 * samples)
        if offset + size > raw.size:
            raise ValueError(f"truncated PNG file {path} (image data cut short)")
        rows = raw[offset:offset + size].reshape(h, 1 + w * 2 * samples)
        out[y0::dy, x0::dx] = _unfilter(rows[:, 0], rows[:, 1:].reshape(h, w, 2 * samples), path)
        offset += size
    values = out.reshape(height, width, samples, 2).astype(np.uint16)
    return (values[..., 0] << 8) | values[..., 1]  # big-endian samples


def _unfilter(filters: np.ndarray, raw: np.ndarray, path: Path) -> np.ndarray:
    """Reverse PNG row filters. Pixel (y, x) depends on (y, x-1), (y-1, x), (y-1, x-1), so all
    pixels on one anti-diagonal are independent: h + w vectorised steps instead of h * w."""
    if filters.max(initial=0) > 4:
        raise ValueError(f"corrupt PNG file {path} (unknown row filter {filters.max()})")
    h, w, _ = raw.shape
    out = np.zeros((h + 1, w + 1, raw.shape[2]), dtype=np.int32)  # zero row/column = "outside"
    raw = raw.astype(np.int32)
    for diagonal in range(h + w - 1):
        ys = np.arange(max(0, diagonal - w + 1), min(h, diagonal + 1))
        xs = diagonal - ys
        left, up, up_left = out[ys + 1, xs], out[ys, xs + 1], out[ys, xs]
        kind = filters[ys][:, None]
        estimate = left + up - up_left
        da, db, dc = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
        paeth = np.where((da <= db) & (da <= dc), left, np.where(db <= dc, up, up_left))
        prediction = np.select([kind == 1, kind == 2, kind == 3, kind == 4],
                               [left, up, (left + up) >> 1, paeth], 0)
        out[ys + 1, xs + 1] = (raw[ys, xs] + prediction) & 255
    return out[1:, 1:].astype(np.uint8)
