"""Every command speaks one vocabulary: the same spelling for the same option everywhere, and
``--help`` works wherever ``main`` is called from (a notebook's stdout is not a terminal's)."""

from __future__ import annotations

import contextlib
import importlib
import io
import re

import pytest

COMMANDS = ["tasks.sr.train", "tasks.sr.evaluate", "tasks.sr.upscale", "tasks.classify.train",
            "tasks.classify.experiments", "tasks.parse.train", "tasks.parse.evaluate", "tasks.detect.train",
            "tasks.detect.evaluate", "tasks.report.__main__", "tasks.analysis.attention_maps",
            "tasks.analysis.selectivity", "tasks.profile.__main__"]

# Spellings the commands once had for options that now have one name each.
RETIRED = {"--output": "--output-dir", "--out": "--output-dir", "--num-samples": "--num-pictures",
           "--num-visuals": "--num-pictures", "--num-vis": "--num-pictures", "--vis": "--num-pictures",
           "--save-predictions": "--num-pictures", "--eval-images": "--max-images"}


def _help(module: str) -> str:
    out = io.StringIO()  # no reconfigure(), as in a notebook
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(["--help"])
    assert done.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("module", COMMANDS)
def test_help_uses_one_spelling_per_option(module):
    text = re.sub(r"-\n\s+", "-", _help(module))  # argparse wraps "--output-dir" after its hyphen
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
    assert options, module
    assert not {o: RETIRED[o] for o in options if o in RETIRED}
    assert {o for o in options if o.startswith("--out")} <= {"--output-dir"}


DEVICE_COMMANDS = ["tasks.sr.evaluate", "tasks.sr.upscale", "tasks.parse.evaluate",
                   "tasks.detect.evaluate", "tasks.analysis.selectivity"]


@pytest.mark.parametrize("module", DEVICE_COMMANDS)
@pytest.mark.parametrize("device, message", [("cuda", "cuda: no CUDA GPU is available"),
                                             ("gpu0", "'gpu0' is not a device")])
def test_a_device_the_machine_lacks_is_refused_naming_the_option(module, device, message,
                                                                  monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # as on the CI machine
    with pytest.raises(SystemExit) as done:  # before any checkpoint or data is looked for
        importlib.import_module(module).main(["--device", device])
    assert done.value.code == 2
    assert f"argument --device: {message}" in capsys.readouterr().err


def test_the_commands_with_a_device_option_are_all_checked_above():
    assert {module for module in COMMANDS if "--device" in _help(module)} == set(DEVICE_COMMANDS)
