"""``--compile {off,default,reduce-overhead}``: torch.compile for the training steps only.

The training steps call a compiled wrapper that shares the network's parameters; everything else
uses the network itself, so state dicts, checkpoints and ``network.safetensors`` have the same keys
with and without compile (no ``_orig_mod.``). Evaluation runs eager: its images differ in size
(Set5, ADE20K, COCO) and would recompile per shape, and its scores are those that ``evaluate``
gives later. ``reduce-overhead`` is Inductor's CUDA-graph mode (one graph replay per step, what
small SR batches are bound by); without a CUDA device it runs as ``default``.
``BAM_COMPILE_BACKEND`` (for tests) replaces Inductor, e.g. by ``aot_eager``.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from tasks.utils.messages import note_once

COMPILE_MODES = ("off", "default", "reduce-overhead")
BACKEND_ENV = "BAM_COMPILE_BACKEND"


def uses_cuda_graphs(mode: str, device: torch.device) -> bool:
    return mode == "reduce-overhead" and torch.device(device).type == "cuda"


def compile_for_training(model: nn.Module, mode: str, device: torch.device | str) -> nn.Module:
    """The module the training steps call: ``model`` itself (``off``) or a compiled wrapper that
    shares its parameters. Dynamo's caches are cleared first, so the runs of one process
    (``--attention none bam``) never reach its recompilation limit, past which it runs eager."""
    if mode == "off":
        return model
    graphs = uses_cuda_graphs(mode, device)
    if mode == "reduce-overhead" and not graphs:
        note_once(f"--compile reduce-overhead uses CUDA graphs, which need a CUDA device; on "
                  f"{torch.device(device).type} it compiles as --compile default")
    backend = os.environ.get(BACKEND_ENV) or "inductor"
    torch._dynamo.reset()
    # Other backends take no Inductor mode.
    return torch.compile(model, mode="reduce-overhead" if graphs and backend == "inductor" else None, backend=backend)


def begin_step(mode: str, device: torch.device) -> None:
    """Call before each forward of a training step: with CUDA graphs, it tells the graph trees
    that the previous step's outputs are dead, so the next replay may overwrite them."""
    if uses_cuda_graphs(mode, device):
        torch.compiler.cudagraph_mark_step_begin()
