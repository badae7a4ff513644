"""Self-describing model files: weights plus the recipe to rebuild the network.

Accelerate's checkpoint folders hold optimizer and RNG state for resuming, but evaluation,
upscaling and analysis tools need only the network. ``model.pt`` stores the weights together with
an importable builder and its keyword arguments, so any tool can rebuild the exact network
(with or without BAM) without knowing which task trained it.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "bam-model/1"
MODEL_FILE = "model.pt"


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    builder: str,
    kwargs: dict[str, Any],
    task: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and how to rebuild it to ``path`` atomically (temporary file + rename)."""
    _resolve_builder(builder)  # fail now, not when someone tries to load the file months later
    path = Path(path)
    if path.is_dir() or path.suffix == "":
        path = path / MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    record = {"format": FORMAT, "task": task, "builder": builder, "kwargs": dict(kwargs),
              "state_dict": state, "extra": dict(extra or {})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(record, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def find_model_file(path: str | os.PathLike) -> Path:
    """Accept a ``model.pt``, a checkpoint folder, or a run folder (its best checkpoint first)."""
    path = Path(path)
    candidates = [path] if path.is_file() else [
        path / MODEL_FILE,
        path / "checkpoints" / "best" / MODEL_FILE,
        path / "checkpoints" / "last" / MODEL_FILE,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no model file at {path}: expected a {MODEL_FILE}, a checkpoint folder holding one, or a run "
        f"folder with checkpoints/best/{MODEL_FILE}"
    )


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network saved by :func:`save_model` and load its weights (strictly)."""
    file = find_model_file(path)
    try:
        record = torch.load(file, map_location=map_location, weights_only=False)
    except Exception as error:  # a truncated or foreign file: say which one
        raise ValueError(f"{file} is not a readable model file ({error})") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{file} is not a {FORMAT} model file (was it written by save_model?)")
    try:
        builder = _resolve_builder(record["builder"])
    except ValueError as error:
        raise ValueError(f"{file}: {error}") from error
    model = builder(**record["kwargs"])
    try:
        model.load_state_dict(record["state_dict"])
    except RuntimeError as error:  # e.g. a file from a version whose network had other layers
        summary = " ".join(str(error).split())[:500]
        raise ValueError(f"{file}: the stored weights do not fit the network that {record['builder']} "
                         f"builds from the stored arguments ({summary})") from error
    return model, record


# Weight files other tools write, looked for (after model.pt) in a checkpoint or run folder.
_WEIGHT_FILES = (MODEL_FILE, "model.safetensors", "pytorch_model.bin", "model.pth")
# Wrappers that prefix every key: DDP, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: str | os.PathLike, anchor: str = "conv1.weight") -> dict[str, torch.Tensor]:
    """Pretrained weights from whatever file a user has, as a plain state dict.

    ``path``: a torchvision ``.pth``, a ``.safetensors`` file, a checkpoint dict (``{"model"|
    "state_dict"|...: ...}``), this repository's ``model.pt``, or a checkpoint or run folder
    (its best checkpoint first). DDP/compile prefixes are dropped, and so is any other prefix in
    front of ``anchor`` (a key the wanted network has, e.g. a ResNet's ``conv1.weight``), so a
    whole-model checkpoint yields its trunk. Errors name the file.
    """
    file = _find_weight_file(Path(path).expanduser())
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            # Weights only: the file may come from anywhere. This repository's model.pt holds
            # plain Python values besides tensors, which the safe loader accepts.
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or foreign file: name it instead of a pickle trace
        raise ValueError(f"cannot read weights from {file}: {error}") from error
    for key in ("state_dict", "model", "model_state", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file} does not hold a state dict of tensors")
    return _strip_prefixes(state, anchor)


def _find_weight_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"weights not found: {path}")
    for folder in (path, path / "checkpoints" / "best", path / "checkpoints" / "last"):
        for name in _WEIGHT_FILES:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"no weights in {path}: expected one of {', '.join(_WEIGHT_FILES)} there or in "
                            "its checkpoints/best or checkpoints/last")


def _strip_prefixes(state: dict[str, torch.Tensor], anchor: str) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        while state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if anchor not in state:
        prefixes = {k[: -len(anchor)] for k in state if k.endswith("." + anchor)}
        if len(prefixes) == 1:  # e.g. "backbone." or "encoder." of a whole-model checkpoint
            prefix = prefixes.pop()
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _resolve_builder(builder: str):
    module_name, _, function_name = builder.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"builder {builder!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import model builder {builder!r}: {error}") from error
