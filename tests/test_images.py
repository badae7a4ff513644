"""tasks.data.images: listing folders and reading any image mode into uint8 RGB."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tasks.data.images import list_images, read_image, read_rgb

RNG = np.random.default_rng(0)


def _expected_8bit(values16: np.ndarray) -> np.ndarray:
    """Independent reference: round(v * 255 / 65535) in float64."""
    return np.floor(values16.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)


# -- a small PNG encoder for 16-bit data (Pillow cannot write 16-bit RGB) -------------------------

def _filter_rows(data: np.ndarray, bpp: int) -> bytes:
    """PNG-filter the byte rows of ``data`` (h, row_bytes), using filter type (row % 5)."""
    rows = data.astype(np.int32)
    out = []
    for y, row in enumerate(rows):
        kind = y % 5
        up = rows[y - 1] if y else np.zeros_like(row)
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        p = left + up - up_left
        pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        prediction = [0, left, up, (left + up) // 2, paeth][kind]
        out.append(bytes([kind]) + ((row - prediction) % 256).astype(np.uint8).tobytes())
    return b"".join(out)


def write_png16(path, array: np.ndarray, interlace: bool = False) -> None:
    array = np.asarray(array, dtype=">u2")
    if array.ndim == 2:
        array = array[:, :, None]
    h, w, channels = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    bpp = 2 * channels
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2)] if interlace else [(0, 0, 1, 1)]
    payload = b""
    for x0, y0, dx, dy in passes:
        sub = array[y0::dy, x0::dx]
        if sub.size:
            sub = np.ascontiguousarray(sub)
            payload += _filter_rows(sub.reshape(sub.shape[0], -1).view(np.uint8), bpp)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, int(interlace))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(payload))
                     + chunk(b"IEND", b""))


# -- listing ---------------------------------------------------------------------------------------

def test_list_images_sorted_recursive_and_filtered(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    pixel = Image.new("RGB", (2, 2))
    for name in ["z.png", "a.JPG", "b/c.bmp", "b/d.webp", ".hidden/e.png", "notes.txt"]:
        target = tmp_path / name
        if name.endswith(".txt"):
            target.write_text("x")
        else:
            pixel.save(target, format={"jpg": "JPEG", "bmp": "BMP", "webp": "WEBP"}.get(
                target.suffix.lower()[1:], "PNG"))
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.JPG", "b/c.bmp", "b/d.webp", "z.png"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.JPG", "z.png"]


def test_list_images_follows_linked_folders_once(tmp_path):
    """A data set assembled from links: every linked image counts, and a link back up ends."""
    pixel = Image.new("RGB", (2, 2))
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    for name in ["data/own.png", "elsewhere/a.png", "elsewhere/deep/b.png", "elsewhere/deep/c.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        pixel.save(tmp_path / name)
    (data / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "deep" / "up").symlink_to(tmp_path, target_is_directory=True)  # a cycle through data/
    (data / "own-link.png").symlink_to(tmp_path / "elsewhere" / "a.png")
    names = [p.relative_to(data).as_posix() for p in list_images(data)]
    assert names == ["linked/a.png", "linked/deep/b.png", "linked/deep/c.png", "own-link.png", "own.png"]


def test_list_images_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match="empty"):
        list_images(tmp_path / "empty")


# -- modes -----------------------------------------------------------------------------------------

def test_rgb_png_round_trip(tmp_path):
    pixels = RNG.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    image = read_rgb(tmp_path / "rgb.png")
    assert image.dtype == np.uint8 and image.shape == (13, 17, 3)
    np.testing.assert_array_equal(image, pixels)
    assert image.flags.writeable


def test_gray_is_replicated_and_kept_by_read_image(tmp_path):
    gray = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), gray)
    rgb = read_rgb(tmp_path / "gray.png")
    assert rgb.shape == (9, 11, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)


def test_rgba_drops_alpha_keeping_colour_under_transparency(tmp_path):
    rgba = RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    rgba[:, :4, 3] = 0  # fully transparent half: its colours must survive (alpha dropped, not composited)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgba.png"), rgba[:, :, :3])
    la = RNG.integers(0, 256, (5, 6, 2), dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "la.png")[:, :, 1], la[:, :, 0])


def test_palette_is_expanded_through_the_palette(tmp_path):
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    indices = RNG.integers(0, 256, (7, 9), dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.ravel().tolist())
    image.info["transparency"] = 3  # palettes with transparency need the RGBA route in Pillow
    image.save(tmp_path / "p.png", transparency=3)
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png"), palette[indices])


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    values = RNG.integers(0, 65536, (10, 12)).astype(np.uint16)
    values[0, :4] = [0, 128, 129, 65535]  # 128 -> 0.498.. -> 0 ; 129 -> 0.502 -> 1
    Image.fromarray(values).save(tmp_path / "g16.png")  # Pillow writes mode I;16 with its filters
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out, _expected_8bit(values))
    assert out[0, :4].tolist() == [0, 0, 1, 255]


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_png_all_colour_types_filters_and_interlace(tmp_path, channels, interlace):
    values = RNG.integers(0, 65536, (19, 23, channels)).astype(np.uint16)
    path = tmp_path / "x16.png"
    write_png16(path, values, interlace=interlace)
    expected = _expected_8bit(values[:, :, 0] if channels <= 2 else values[:, :, :3])
    out = read_image(path)
    assert out.shape == expected.shape and out.dtype == np.uint8  # gray (+ alpha) stays 2-D
    np.testing.assert_array_equal(out, expected)
    if channels == 3 and not interlace:
        # Pillow keeps only the high byte of 16-bit RGB: off by one on many pixels
        pillow = np.asarray(Image.open(path).convert("RGB"))
        assert (pillow != expected).mean() > 0.2


@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_png_with_a_transparent_colour_keeps_its_channels(tmp_path, channels):
    values = RNG.integers(0, 65536, (6, 5, channels)).astype(np.uint16)
    path = tmp_path / "t16.png"
    write_png16(path, values)
    data = path.read_bytes()
    body = values[0, 0].astype(">u2").tobytes()  # tRNS: one colour marked transparent
    trns = struct.pack(">I", len(body)) + b"tRNS" + body + struct.pack(">I", zlib.crc32(b"tRNS" + body))
    path.write_bytes(data[:33] + trns + data[33:])  # right after IHDR (8 + 25 bytes)
    expected = _expected_8bit(values[:, :, 0] if channels == 1 else values)
    out = read_image(path)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_16bit_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    values = RNG.integers(0, 65536, (6, 7, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", values, photometric="rgb")
    np.testing.assert_array_equal(read_rgb(tmp_path / "x.tif"), _expected_8bit(values))


def test_jpeg_and_cmyk_and_exif_rotation(tmp_path):
    yy, xx = np.mgrid[0:24, 0:32]
    smooth = np.stack([xx * 8, yy * 10, (xx + yy) * 4], axis=2).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    image = read_rgb(tmp_path / "a.jpg")
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - smooth).mean() < 3  # lossy but close
    Image.fromarray(smooth).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert np.abs(read_rgb(tmp_path / "cmyk.jpg").astype(int) - smooth).mean() < 4
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(smooth).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    assert read_rgb(tmp_path / "rot.jpg").shape == (32, 24, 3)
    # exif=False keeps the stored pixel grid (the one label maps and boxes refer to)
    assert read_rgb(tmp_path / "rot.jpg", exif=False).shape == (24, 32, 3)


@pytest.mark.parametrize("suffix, fmt", [(".png", "PNG"), (".jpg", "JPEG")])
def test_truncated_file_names_the_file(tmp_path, suffix, fmt):
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cut{suffix}"):
        read_rgb(path)


@pytest.mark.parametrize("keep", [200, 0.5, -20])
def test_truncated_16bit_png_names_the_file(tmp_path, keep):
    path = tmp_path / "cut16.png"
    write_png16(path, RNG.integers(0, 65536, (30, 30, 3)).astype(np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(ValueError, match="cut16.png"):
        read_rgb(path)


def test_corrupt_16bit_png_names_the_file(tmp_path):
    path = tmp_path / "bad16.png"
    write_png16(path, RNG.integers(0, 65536, (30, 30, 3)).astype(np.uint16))
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the image data: its checksum no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad16.png"):
        read_rgb(path)


def test_16bit_png_under_a_non_ascii_path(tmp_path):
    values = RNG.integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    path = tmp_path / "données" / "image_été.png"
    path.parent.mkdir()
    write_png16(path, values)
    np.testing.assert_array_equal(read_rgb(path), _expected_8bit(values))


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.png"):
        read_rgb(tmp_path / "absent.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="junk.png"):
        read_rgb(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="folder"):
        read_rgb(tmp_path)


def test_16bit_png_with_absurd_header_size_is_refused(tmp_path):
    path = tmp_path / "bomb16.png"
    write_png16(path, np.zeros((2, 2), np.uint16))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 200_000, 200_000)  # IHDR width, height (CRC not checked)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bomb16.png.*200000x200000"):
        read_rgb(path)
    data[16:24] = struct.pack(">II", 0, 2)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bomb16.png.*0x2"):
        read_rgb(path)
