"""``--compile``: compiled training steps compute what eager ones do; checkpoints, resume and
evaluation stay those of the network itself.

Most tests trace with the ``aot_eager`` backend (``BAM_COMPILE_BACKEND``): the same Dynamo and
AOTAutograd graphs as Inductor without generating C++, which takes tens of seconds per network on
a 2-core CPU. One test compiles with Inductor itself when a C++ compiler is there.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import bam
from tasks.common.cli import add_run_args
from tasks.common.compile import BACKEND_ENV, compile_for_training
from tasks.common.run import Task
from tasks.sr import train as sr_train
from tasks.sr.model import srresnet
from tasks.utils import messages


@pytest.fixture(autouse=True)
def traced_without_codegen(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "aot_eager")
    monkeypatch.setattr(messages, "_noted", set())  # each test sees its own notes
    yield
    torch._dynamo.reset()


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def stage(channels_in, channels_out, stride):
            return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride, 1), nn.BatchNorm2d(channels_out),
                                 nn.ReLU())

        self.stages = nn.Sequential(stage(3, 16, 1), stage(16, 16, 1), stage(16, 32, 2), stage(32, 32, 1))
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x).mean(dim=(2, 3)))


def hooked_convnet() -> nn.Module:
    """A small CNN with one BAM attached by a forward hook (bam.attach_attention)."""
    model = SmallCNN()
    assert bam.attach_attention(model, "bam", input_size=(3, 16, 16)) == ["stages.1"]
    return model


def small_srresnet() -> nn.Module:
    """SRResNet x4 with its BAM (after block 4) held in a ModuleDict."""
    return srresnet(num_blocks=4, channels=8, attention="bam")


def one_step(model: nn.Module, x: torch.Tensor):
    leaf = x.clone().requires_grad_()
    out = model(leaf)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), leaf.grad


def assert_same_training_step(build, x: torch.Tensor, tolerance: dict) -> None:
    torch.manual_seed(0)
    eager = build().train()
    shared = copy.deepcopy(eager)
    compiled = compile_for_training(shared, "default", "cpu")
    from torch._dynamo.utils import counters

    counters.clear()
    for got, want in zip(one_step(compiled, x), one_step(eager, x)):
        torch.testing.assert_close(got, want, **tolerance)
    assert not counters["graph_break"], dict(counters["graph_break"])  # BAM's hooks trace into one graph
    # The wrapper shares the network's parameters: its gradients and BN statistics land there,
    # under the same names (no "_orig_mod." prefix).
    assert list(shared.state_dict()) == list(eager.state_dict())
    scale = max(p.grad.abs().max().item() for p in eager.parameters())
    for (name, got), want in zip(shared.named_parameters(), eager.parameters()):
        torch.testing.assert_close(got.grad, want.grad, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale,
                                   msg=name)
    for (name, got), want in zip(shared.named_buffers(), eager.buffers()):
        torch.testing.assert_close(got, want, **tolerance, msg=name)


@pytest.mark.parametrize("build, shape", [(hooked_convnet, (4, 3, 16, 16)), (small_srresnet, (2, 3, 6, 6))],
                         ids=["hooked-bam", "srresnet-moduledict"])
def test_compiled_outputs_and_gradients_match_eager(build, shape):
    assert_same_training_step(build, torch.rand(shape), dict(rtol=1e-4, atol=1e-5))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="Inductor's CPU backend needs a C++ compiler")
def test_inductor_compiled_step_matches_eager(monkeypatch):
    """The default backend (generated C++ kernels; fused, so rounding differs a little more)."""
    monkeypatch.delenv(BACKEND_ENV)
    assert_same_training_step(hooked_convnet, torch.rand(4, 3, 16, 16), dict(rtol=1e-3, atol=1e-4))


def test_reduce_overhead_falls_back_on_the_cpu_and_says_so_once(capsys):
    for _ in range(2):
        compiled = compile_for_training(small_srresnet(), "reduce-overhead", "cpu")
        compiled(torch.rand(2, 3, 6, 6)).sum().backward()
    notes = [line for line in capsys.readouterr().err.splitlines() if "reduce-overhead" in line]
    assert len(notes) == 1 and "CUDA device" in notes[0] and "--compile default" in notes[0]
    model = nn.Linear(2, 2)
    assert compile_for_training(model, "off", "cpu") is model


def test_varying_shape_tasks_refuse_cuda_graphs(capsys):
    class Parsing(Task):
        name, fixed_shapes = "parse", False

    class Fixed(Task):
        name = "sr"

    with pytest.raises(ValueError, match="--compile reduce-overhead .* parse batches change shape"):
        Parsing().check(argparse.Namespace(attention="none", compile="reduce-overhead"))
    Parsing().check(argparse.Namespace(attention="none", compile="default"))
    assert "recompile" in capsys.readouterr().err
    Fixed().check(argparse.Namespace(attention="none", compile="reduce-overhead"))


def test_compile_option():
    parser = add_run_args(argparse.ArgumentParser())
    assert parser.parse_args([]).compile == "off"
    assert parser.parse_args(["--compile", "reduce-overhead"]).compile == "reduce-overhead"
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "max-autotune"])


# -- through the SR command line ----------------------------------------------------------------
SMALL = ["--preset", "quick", "--attention", "bam", "--sets", "embedded", "--num-blocks", "4", "--channels", "8",
         "--patch-size", "24", "--batch-size", "2", "--num-workers", "0", "--seed", "5", "--num-pictures", "0",
         "--wandb", "disabled", "--lr-schedule", "constant", "--eval-every", "3"]


def _train(out, *extra: str) -> dict:
    [summary] = sr_train.main([*SMALL, "--output-dir", str(out), "--run-name", "run", *extra])
    return summary


def test_compiled_resumed_run_reaches_the_weights_of_an_uncompiled_one(tmp_path):
    """Compiled for 3 steps, stopped, resumed compiled to 6: the weights and scores of a straight
    uncompiled run of 6 steps; the checkpoints are the uncompiled network's own."""
    from torch._dynamo.utils import counters

    straight = _train(tmp_path / "eager", "--max-steps", "6")
    counters.clear()
    _train(tmp_path / "compiled", "--max-steps", "3", "--compile", "default")
    resumed = _train(tmp_path / "compiled", "--max-steps", "6", "--compile", "default", "--resume")
    assert counters["stats"]["unique_graphs"] >= 2  # each segment trained through a compiled graph
    run = tmp_path / "compiled" / "run"
    assert json.loads((run / "config.json").read_text())["compile"] == "default"
    assert resumed["steps"] == 6

    last = run / "checkpoints" / "last"
    want = load_file(str(tmp_path / "eager" / "run" / "checkpoints" / "last" / "model.safetensors"))
    got = load_file(str(last / "model.safetensors"))
    assert got.keys() == want.keys()
    for key in want:
        # Adam divides by the gradient's size: rounding-level gradients (conv biases before a BN,
        # whose true gradient is 0) may move by up to lr per step; everything else agrees closely.
        torch.testing.assert_close(got[key], want[key], rtol=1e-3, atol=6 * 1e-3 if key.endswith("bias") else 1e-4,
                                   msg=key)
    network = load_file(str(last / "network.safetensors"))
    uncompiled = srresnet(num_blocks=4, channels=8, attention="bam")
    assert sorted(network) == sorted(uncompiled.state_dict()) and not any("_orig_mod" in k for k in network)
    uncompiled.load_state_dict(network)  # strict: a compiled run's checkpoint loads into a plain model
    metric = "psnr/embedded"
    assert resumed["final"][metric] == pytest.approx(straight["final"][metric], abs=0.05)
