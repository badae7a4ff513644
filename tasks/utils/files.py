"""Files that readers never see half written: a temporary file in the same folder, then
``os.replace`` (atomic), so a reader or a run killed midway finds the old file or the new one. The
file gets the permissions a plain ``open()`` gives (0664 under umask 002: a group shares results).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from tasks.utils.formatting import byte_size


class WriteError(OSError):
    """A file could not be written (full disk, read-only folder); the message says which file, why,
    and what was kept. Commands print it as one line."""


def check_writable(folder: str | os.PathLike, what: str = "output folder", needed_bytes: int = 0,
                   needed_for: str = "the outputs") -> Path:
    """Create ``folder`` if needed and write a probe file in it (permission bits do not tell: root
    ignores them), so that a read-only or full folder stops a command before it spends time.
    ``ValueError`` names ``what`` (e.g. ``--output-dir``), the folder, and the fault."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"{what} {folder} is not writable ({reason}): choose another folder or fix its "
                         "permissions") from None
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise ValueError(f"{what} {folder} has {byte_size(free)} free, fewer than the {byte_size(needed_bytes)} "
                         f"needed for {needed_for}: free some space or choose another folder")
    return folder


def _umask() -> int:
    """The process's umask: from /proc on Linux; elsewhere by setting it, which leaves a moment in
    which another thread would create files with the probe value."""
    try:
        with open("/proc/self/status") as status:
            found = re.search(r"^Umask:\s*([0-7]+)$", status.read(), re.M)
        if found:
            return int(found.group(1), 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format by
    the name still work); on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # After the writer, which may have replaced the file (safetensors does): mkstemp's 0600 would
        # keep it from the group. Some network mounts refuse chmod.
        with contextlib.suppress(OSError):
            tmp.chmod(0o666 & ~_umask())
        with open(tmp, "rb+") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, in UTF-8; surrogates (a path that is not UTF-8, quoted
    in the text) are written as ``\\xNN``."""
    data = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def json_default(obj: Any) -> Any:
    """Numbers from numpy/torch, sets and paths as plain JSON (configs and metrics hold them)."""
    if hasattr(obj, "tolist"):  # tensors, numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def write_png_atomic(path: str | os.PathLike, image, compress_level: int = 6) -> Path:
    """Save an HxWx3 (or HxW) uint8 array or a PIL image as a PNG file atomically; ``compress_level``
    is zlib's (3 writes twice as fast as the default 6, for files about 3% larger)."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG", compress_level=compress_level)
    return Path(path)
