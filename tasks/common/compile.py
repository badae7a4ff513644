"""``--compile {off,default,reduce-overhead}``: torch.compile for the training steps only.

The training steps call a compiled wrapper of the network (``torch.compile``), which shares the
network's parameters and buffers; everything else keeps using the network itself:

* the state dict, ``accelerator.save_state``/``load_state``, ``network.safetensors`` and resume
  see the same keys as without compile (no ``_orig_mod.`` prefix: the wrapper is never saved, and
  Accelerate's ``unwrap_model`` would keep it by default), so checkpoints of compiled and
  uncompiled runs load into each other;
* evaluation runs eager on the same network. Evaluation images differ in size (Set5/Set14,
  ADE20K, COCO), so a compiled evaluation would recompile per shape, and with CUDA graphs record
  one graph per shape; eager, the logged scores are also exactly the ones ``evaluate
  --checkpoint`` gives later;
* BAM's forward hooks (``bam.attach_attention``) and SRResNet's ModuleDict of BAMs are traced
  into the compiled graph like any submodule (tested with ``fullgraph=True``).

``reduce-overhead`` is Inductor's CUDA-graph mode: one graph replay per step instead of hundreds
of kernel launches, which is what small SR batches are bound by. CUDA graphs need fixed input
shapes and a CUDA device; on a CPU the mode runs as ``default`` (said once).

``BAM_COMPILE_BACKEND`` (internal, for tests and debugging) replaces Inductor by another
torch.compile backend, e.g. ``aot_eager``, which traces the same graphs without generating code.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from tasks.utils.messages import note_once

__all__ = ["COMPILE_MODES", "BACKEND_ENV", "compile_for_training", "uses_cuda_graphs", "begin_step", "check_mode"]

COMPILE_MODES = ("off", "default", "reduce-overhead")
BACKEND_ENV = "BAM_COMPILE_BACKEND"


def check_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")


def uses_cuda_graphs(mode: str, device: torch.device) -> bool:
    return mode == "reduce-overhead" and torch.device(device).type == "cuda"


def _torch_mode(mode: str, device: torch.device, backend: str) -> str | None:
    if mode != "reduce-overhead":
        return None
    if not uses_cuda_graphs(mode, device):
        note_once(f"--compile reduce-overhead uses CUDA graphs, which need a CUDA device; on "
                  f"{torch.device(device).type} it compiles as --compile default")
        return None
    return "reduce-overhead" if backend == "inductor" else None  # other backends take no Inductor mode


def compile_for_training(model: nn.Module, mode: str, device: torch.device | str) -> nn.Module:
    """The module the training steps call: ``model`` itself (``off``) or a compiled wrapper that
    shares its parameters (see the module docstring for why only the training steps use it).

    Dynamo's caches are cleared first: each run compiles its own network afresh, so the runs of
    one process (``--attention none bam``) never reach Dynamo's recompilation limit, past which it
    would silently run eager.
    """
    check_mode(mode)
    if mode == "off":
        return model
    backend = os.environ.get(BACKEND_ENV) or "inductor"
    torch._dynamo.reset()
    return torch.compile(model, mode=_torch_mode(mode, torch.device(device), backend), backend=backend)


def begin_step(mode: str, device: torch.device) -> None:
    """Call before each forward of a training step: with CUDA graphs, it tells the graph trees
    that the previous step's outputs are dead, so the next replay may overwrite them."""
    if uses_cuda_graphs(mode, device):
        torch.compiler.cudagraph_mark_step_begin()
