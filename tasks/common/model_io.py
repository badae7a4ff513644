"""Model files that load without running code: ``network.safetensors`` (the state dict) and
``network.json`` (``{"format", "task", "builder", "kwargs", "extra"}``) side by side.

``builder`` names a function marked with :func:`model_builder` in this repository's ``tasks``
package (e.g. ``"tasks.sr.model:srresnet"``), so a description can only choose among our builders
and their arguments. The arguments are checked against the shapes of the stored weights on the
meta device first, so ``"channels": 12000`` in a small file is refused, not allocated.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load, save_file
from torch import nn

from tasks.utils.files import atomic_path, write_json_atomic

FORMAT = "bam-model/2"
WEIGHTS_FILE = "network.safetensors"
DESCRIPTION_FILE = "network.json"
_BUILDER_MARK = "_bam_model_builder"
_BUILDER_PACKAGE = "tasks."


def model_builder(function: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Mark ``function`` as a builder that model files may name (see the module docstring)."""
    setattr(function, _BUILDER_MARK, True)
    return function


@dataclass(frozen=True)
class ModelDescription:
    """How to rebuild a network: ``builder(**kwargs)``, for ``task``; ``extra`` is free-form JSON
    (preprocessing, the evaluation protocol, class names...)."""

    builder: str
    kwargs: dict[str, Any]
    task: str
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self, source: str | os.PathLike = "the description") -> nn.Module:
        try:
            return resolve_builder(self.builder)(**self.kwargs)
        except TypeError as error:  # arguments the builder does not take
            raise ValueError(f"{source}: {self.builder} cannot build from {sorted(self.kwargs)}: {error}") from None
        except ValueError as error:  # not one of our builders, or values it refuses
            raise ValueError(f"{source}: {error}") from None


def resolve_builder(name: str) -> Callable[..., nn.Module]:
    """The builder function ``name`` (``"tasks.x.y:function"``); ValueError for anything else."""
    module_name, _, function_name = str(name).partition(":")
    if not module_name.startswith(_BUILDER_PACKAGE) or not function_name:
        raise ValueError(f"builder {name!r} is not one of this repository's model builders "
                         f"('{_BUILDER_PACKAGE}<module>:<function>')")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import model builder {name!r}: {error}") from None
    if not getattr(function, _BUILDER_MARK, False):
        raise ValueError(f"{name!r} is not marked as a model builder (tasks.common.model_io.model_builder)")
    return function


def save_model(folder: str | os.PathLike, model: nn.Module, description: ModelDescription) -> Path:
    """Write ``network.safetensors`` and ``network.json`` into ``folder``, each atomically."""
    resolve_builder(description.builder)  # fail now, not when somebody loads the file months later
    folder = Path(folder)
    # A copy of each tensor: safetensors refuses tensors that share memory (tied weights, views).
    state = {name: tensor.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
             for name, tensor in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json_atomic(folder / DESCRIPTION_FILE, {"format": FORMAT, **asdict(description)})
    return folder / DESCRIPTION_FILE


def find_model_file(path: str | os.PathLike) -> Path:
    """The ``network.json`` of ``path``: the file itself, a checkpoint folder, or a run folder
    (its best checkpoint, else its last)."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.name == WEIGHTS_FILE:
            path = path.with_name(DESCRIPTION_FILE)
        if path.name == DESCRIPTION_FILE and path.is_file():
            return path
        raise ValueError(f"{path} is not a model file: expected {DESCRIPTION_FILE} (with {WEIGHTS_FILE} beside it)")
    for folder in (path, path / "checkpoints" / "best", path / "checkpoints" / "last"):
        if (folder / DESCRIPTION_FILE).is_file():
            return folder / DESCRIPTION_FILE
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    raise FileNotFoundError(f"no model file at {path}: expected {DESCRIPTION_FILE} and {WEIGHTS_FILE} there or "
                            "in its checkpoints/best or checkpoints/last (a run folder)")


def read_description(file: str | os.PathLike) -> ModelDescription:
    """The checked contents of a ``network.json``; errors name the file and what is wrong."""
    file = Path(file)
    try:
        record = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{file} is not a readable model description ({error})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{file} is not a {FORMAT} model description (format: {found!r})")
    missing = [key for key in ("task", "builder", "kwargs") if key not in record]
    if missing or not isinstance(record["kwargs"], dict):
        raise ValueError(f"{file}: the model description lacks {missing or ['kwargs as an object']}")
    return ModelDescription(str(record["builder"]), record["kwargs"], str(record["task"]),
                            dict(record.get("extra") or {}))


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu",
               task: str | None = None) -> tuple[nn.Module, ModelDescription]:
    """Rebuild the network saved by :func:`save_model` and load its weights strictly.

    ``task`` (e.g. ``"sr"``): refuse a model made for another task, naming the task it was made for.
    The stored arguments must build exactly the tensors the weights file holds (checked on the meta
    device first, so no memory goes to a network that does not fit).
    """
    file = find_model_file(path)
    description = read_description(file)
    if task is not None and description.task != task:
        raise ValueError(f"{file} holds a model made for the {description.task!r} task ({description.builder}); "
                         f"this command takes models of the {task!r} task")
    weights = file.with_name(WEIGHTS_FILE)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found (the weights that belong to {file})")
    state = read_safetensors(weights, map_location)
    stored = {name: tuple(tensor.shape) for name, tensor in state.items()}
    with _at_most_tensors(len(stored), weights), torch.device("meta"):
        built = {name: tuple(t.shape) for name, t in description.build(file).state_dict().items()}
    if built != stored:  # e.g. a file from a version whose network had other layers, or edited arguments
        raise ValueError(f"{weights}: the stored weights do not fit the network that {description.builder} builds "
                         f"from the stored arguments ({_differences(stored, built)})")
    model = description.build(file)
    model.load_state_dict(state)
    return model, description


@contextlib.contextmanager
def _at_most_tensors(stored: int, weights: Path):
    """Stop a build that registers far more parameters and buffers than the ``stored`` tensors: a
    stored argument (a block count of millions) must not cost minutes and gigabytes even on the meta
    device. Builders may register some tensors twice (a layer replaced after it was built), hence
    the margin."""
    count = 0

    def counted(_module, _name, value):
        nonlocal count
        count += value is not None
        if count > 4 * stored + 100:
            raise ValueError(f"the stored arguments build far more tensors than the {stored} that {weights} holds")

    handles = [nn.modules.module.register_module_parameter_registration_hook(counted),
               nn.modules.module.register_module_buffer_registration_hook(counted)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _differences(stored: dict[str, tuple], built: dict[str, tuple], shown: int = 3) -> str:
    """The first ``shown`` differences in the network's own order, and how many more there are."""
    lines = [f"{name}: stored {list(stored[name])}, built {list(shape)}" if name in stored else
             f"{name}: built, not stored" for name, shape in built.items() if stored.get(name) != shape]
    lines += [f"{name}: stored, not built" for name in stored if name not in built]
    more = f"; and {len(lines) - shown} more" if len(lines) > shown else ""
    return "; ".join(lines[:shown]) + more


def read_safetensors(file: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, read by Python and handed over as bytes: the safetensors
    library opens only UTF-8 paths."""
    file = Path(file)
    try:
        return {name: tensor.to(map_location) for name, tensor in load(file.read_bytes()).items()}
    except Exception as error:  # safetensors' own errors: truncated or foreign data
        raise ValueError(f"{file} is not a readable safetensors file (truncated or corrupt?): {error}") from None


# -- pretrained weights from elsewhere ------------------------------------------------------------
# Weight files other tools write, looked for in a checkpoint or run folder.
_WEIGHT_FILES = (WEIGHTS_FILE, "model.safetensors", "pytorch_model.bin", "model.pth")
# Wrappers that prefix every key: DDP, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: str | os.PathLike, anchor: str = "conv1.weight") -> dict[str, torch.Tensor]:
    """Pretrained weights from whatever file a user has, as a plain state dict: a torchvision
    ``.pth``, a ``.safetensors`` file, a checkpoint dict (``{"model"|"state_dict"|...: ...}``), or a
    checkpoint or run folder of this repository. Pickles load with ``weights_only=True``. DDP and
    compile prefixes are dropped, and so is any prefix in front of ``anchor`` (a key the wanted
    network has), so a whole-model checkpoint yields its trunk. Errors name the file."""
    file = _find_weight_file(Path(path).expanduser())
    try:
        if file.suffix == ".safetensors":
            state = read_safetensors(file)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or foreign file: name it instead of a pickle trace
        raise ValueError(f"cannot read weights from {file}: {error}") from None
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
