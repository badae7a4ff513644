"""Read a W&B offline run folder (``wandb/offline-run-*``) without a network.

Offline runs keep everything (config, history, summary) in one ``run-<id>.wandb`` file: a
LevelDB-style log of protobuf ``Record`` messages. The wandb package no longer ships a Python
reader for it, so this module reads the log format itself and decodes each record with wandb's own
protobuf classes.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
_BLOCK = 32 * 1024
_RECORD_HEADER = 7  # crc32 (4 bytes), length (2 bytes), type (1 byte)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes, source: Path) -> Iterator[bytes]:
    """Yield the reassembled record payloads of a W&B log file.

    Each chunk carries a CRC-32 of its type byte and data. The first chunk that is cut short or
    fails its CRC ends the reading: it is the torn tail of a run killed while writing, and what
    follows it cannot be trusted.
    """
    if not data.startswith(_HEADER):
        raise ValueError(f"{source} is not a W&B run log (bad header)")
    pos, pending = len(_HEADER), b""
    while pos + _RECORD_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + _RECORD_HEADER])
        pos += _RECORD_HEADER
        chunk = data[pos:pos + length]
        pos += length
        if kind == 0 and length == 0:  # zero padding at the end of a file being written
            break
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            break
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _item_key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_offline_run(folder: str | Path) -> dict[str, Any]:
    """Return ``{"id", "name", "group", "job_type", "tags", "config", "summary", "history"}``."""
    from wandb.proto import wandb_internal_pb2 as pb

    folder = Path(folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"no run-*.wandb file in {folder} (not a W&B offline run folder)")
    run: dict[str, Any] = {"id": "", "name": "", "group": "", "job_type": "", "tags": [],
                           "config": {}, "summary": {}, "history": [], "folder": str(folder)}
    for payload in _payloads(logs[0].read_bytes(), logs[0]):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # a torn last record of a killed run: keep what came before
            continue
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, name=r.display_name, group=r.run_group, job_type=r.job_type,
                       tags=list(r.tags))
            _apply_config(run["config"], r.config)
        elif kind == "config":
            _apply_config(run["config"], record.config)
        elif kind == "history":
            run["history"].append({_item_key(i): _value(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run["summary"][_item_key(item)] = _value(item.value_json)
    return run


def _apply_config(config: dict, record) -> None:
    for item in record.update:
        value = _value(item.value_json)
        # wandb stores each config entry as {"value": ..., "desc": ...}
        config[_item_key(item)] = value.get("value", value) if isinstance(value, dict) else value
    for item in record.remove:
        config.pop(_item_key(item), None)


def find_offline_runs(root: str | Path) -> list[Path]:
    """Every ``offline-run-*`` folder below ``root`` (or ``root`` itself)."""
    root = Path(root)
    if root.name.startswith(("offline-run-", "run-")) and list(root.glob("run-*.wandb")):
        return [root]
    return sorted(p.parent for p in root.rglob("run-*.wandb") if p.parent.name.startswith("offline-run-"))
