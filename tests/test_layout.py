"""The repository's parts import each other in the allowed directions only (docs/architecture.md).

Every ``.py`` file is parsed with ``ast``; ``import x``, ``from x import y`` (relative ones too) and
``importlib.import_module("x")`` / ``__import__("x")`` with a literal name count, at module level
or inside functions. A second test copies ``bam/`` alone into an empty folder and uses it there.
"""
from __future__ import annotations

import ast
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The repository's top-level names: importing one of these imports "of the repository".
OWN = ("bam", "tasks", "datasets", "launch", "benchmarks", "tests")

# Which parts of the repository each part may import (itself included). The longest key that
# contains a module applies to it; parts without a key below "tasks" (the task packages, launch/,
# benchmarks/, tests/) have no limit besides NEVER_IMPORTED.
ALLOWED = {
    "bam": ("bam",),                          # the core: works copied alone into an empty folder
    "tasks": ("bam", "tasks"),                # the task side never imports launch/, benchmarks/, tests/
    "tasks.utils": ("tasks.utils",),          # tiny helpers that every part may use
    "tasks.data": ("tasks.data", "tasks.utils"),  # the loaders: no training machinery, no task, no core
    "tasks.common": ("bam", "tasks.common", "tasks.data", "tasks.utils"),  # shared machinery: no task package
}
# Imported by no file at all: datasets/ is a data folder, and the name is Hugging Face's package.
NEVER_IMPORTED = ("datasets",)


def within(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def rule_for(module: str) -> str | None:
    """The most specific key of ALLOWED that contains ``module``."""
    keys = [key for key in ALLOWED if within(module, key)]
    return max(keys, key=len) if keys else None


def is_repository_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def _imported_by_from(node: ast.ImportFrom, package: str) -> list[str]:
    """``from base import a, b``: ``base.a`` where that is a module of the repository, else ``base``."""
    base = node.module or ""
    if node.level:  # relative: climb from the file's package
        parts = package.split(".")
        anchor = ".".join(parts[:len(parts) - node.level + 1])
        base = f"{anchor}.{base}" if base else anchor
    return [f"{base}.{alias.name}" if is_repository_module(f"{base}.{alias.name}") else base for alias in node.names]


def _imported_by_call(node: ast.Call) -> list[str]:
    """``importlib.import_module("x")``, ``import_module("x")`` and ``__import__("x")`` with a literal."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return []
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("."):
        return [first.value]
    return []


def imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``; ``package`` resolves relative imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, name) for name in _imported_by_from(node, package)]
        elif isinstance(node, ast.Call):
            found += [(node.lineno, name) for name in _imported_by_call(node)]
    return found


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """The imports of ``module`` (whose text is ``source``) that break the rules."""
    package = module if is_package else module.rpartition(".")[0]
    rule = rule_for(module)
    found = []
    for line, name in imports(source, package):
        if any(within(name, never) for never in NEVER_IMPORTED):
            found.append(f"{line}: imports {name} (nothing imports {', '.join(NEVER_IMPORTED)})")
        elif rule and name.split(".")[0] in OWN and not any(within(name, part) for part in ALLOWED[rule]):
            found.append(f"{line}: imports {name} ({rule} may import only {', '.join(ALLOWED[rule])})")
    return found


def source_files() -> list[Path]:
    """The repository's own Python files: the top-level parts, and any script at the top."""
    files = sorted(REPO.glob("*.py"))
    for part in OWN + ("docs",):
        files += sorted(p for p in (REPO / part).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def violations_in(part: str | None) -> list[str]:
    """Violations of every file whose rule is ``part`` (None: every file, for NEVER_IMPORTED)."""
    found = []
    for path in source_files():
        module, is_package = module_name(path)
        if part is None or rule_for(module) == part:
            text = path.read_text(encoding="utf-8")
            found += [f"{path.relative_to(REPO)}:{v}" for v in violations(module, text, is_package)]
    return found


# ------------------------------------------------------------------------------ the checker itself
@pytest.mark.parametrize("module,source,expected", [
    ("bam.fake", "import tasks.common.trainer", ["tasks.common.trainer"]),
    ("bam.fake", "def f():\n    from tasks.sr import model\n", ["tasks.sr.model"]),  # inside a function
    ("bam.fake", "import importlib\nimportlib.import_module('tasks.classify.models')", ["tasks.classify.models"]),
    ("bam.fake", "from launch import sr", ["launch.sr"]),
    ("tasks.data.fake", "from tasks.common.trainer import Trainer", ["tasks.common.trainer"]),
    ("tasks.data.fake", "from ..sr import metrics", ["tasks.sr.metrics"]),  # relative, two levels up
    ("tasks.data.fake", "import bam", ["bam"]),
    ("tasks.utils.fake", "from tasks.data.root import data_root", ["tasks.data.root"]),
    ("tasks.common.fake", "from tasks import parse", ["tasks.parse"]),
    ("tasks.common.fake", "import tasks.profile.counts", ["tasks.profile.counts"]),
    ("tasks.common.fake", "from tasks.networks import load_zoo", ["tasks.networks"]),
    ("tasks.sr.fake", "import launch.sr", ["launch.sr"]),
    ("tasks.sr.fake", "import datasets", ["datasets"]),
    ("launch.fake", "from datasets import load_dataset", ["datasets"]),
    # allowed
    ("bam.fake", "from . import registry\nfrom .placement import attach_attention\nimport torch", []),
    ("tasks.data.fake", "from tasks.utils.files import write_json_atomic\nfrom . import images", []),
    ("tasks.common.fake", "from bam import count_params\nfrom tasks.data.sampling import key_generator", []),
    ("tasks.profile.fake", "from tasks.networks import load_zoo\nfrom tasks.parse.model import UperNet", []),
    ("launch.fake", "from tasks.sr.train import main", []),
])
def test_the_checker_catches_violations(module, source, expected):
    found = violations(module, source)
    assert [entry.split("imports ")[1].split(" ")[0] for entry in found] == expected, found


def test_relative_imports_of_a_package_resolve_from_the_package_itself():
    assert imports("from . import models", "tasks.classify") == [(1, "tasks.classify.models")]
    assert violations("tasks.data", "from ..common import trainer", is_package=True)


def test_every_part_has_files():
    modules = [module_name(path)[0] for path in source_files()]
    for part in ALLOWED:
        assert any(within(module, part) for module in modules), f"no file of {part}: is the table stale?"


# ---------------------------------------------------------------------------- the repository's files
@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_imports_follow_the_allowed_directions(part):
    found = violations_in(part)
    assert not found, f"{part} may import only {', '.join(ALLOWED[part])}:\n" + "\n".join(found)


def test_nothing_imports_a_datasets_package():
    assert not (REPO / "datasets" / "__init__.py").exists(), \
        "datasets/ is a data folder: an __init__.py there would shadow Hugging Face's `datasets`"
    found = violations_in(None)
    assert not [v for v in found if "nothing imports" in v], "\n".join(found)


# ------------------------------------------------------------------------------- bam on its own
STANDALONE = r'''
import sys

sys.path[:0] = sys.argv[1:]  # the copy of bam first, then the interpreter's own packages
import bam

assert bam.__file__.startswith(sys.argv[1]), bam.__file__
try:
    import tasks
except ModuleNotFoundError:
    pass
else:
    raise AssertionError(f"tasks is importable from {tasks.__file__}")

import torch
import torchvision

model = torchvision.models.resnet50()
assert bam.attach_attention(model, "bam", input_size=(3, 224, 224)) == ["layer1", "layer2", "layer3"]
assert bam.count_params(model) == 25_918_689, bam.count_params(model)
assert bam.count_macs(model.eval(), (3, 64, 64)) > 0
with bam.capture_attention(model) as maps, torch.no_grad():
    model(torch.randn(1, 3, 64, 64))
assert sorted(maps) == ["layer1", "layer2", "layer3"] and maps["layer1"]["spatial"].shape == (1, 1, 16, 16)

net = torchvision.models.resnet18(num_classes=10)
assert len(bam.attach_attention(net, "bam", placement="block", input_size=(3, 64, 64))) == 8
with torch.device("meta"):
    net = torchvision.models.resnet18()
    assert bam.attach_attention(net, bam.SqueezeExcitation) == ["layer1", "layer2", "layer3"]

converted = bam.convert_released_state_dict({"module.bam1.channel_att.gate_c.gate_c_fc_0.weight": torch.ones(1)})
assert list(converted) == ["attention.layer1.channel.fc1.weight"]
print("bam works alone")
'''


def test_bam_works_copied_alone(tmp_path):
    shutil.copytree(REPO / "bam", tmp_path / "bam", ignore=shutil.ignore_patterns("__pycache__"))
    # -I: no PYTHON* variables, no current folder on the path; -S: no site-packages processing, so
    # no .pth file (an editable install of this repository would make `tasks` importable). The
    # interpreter's package folders come back by hand, after the copy.
    packages = [p for p in (*site.getsitepackages(), site.getusersitepackages()) if Path(p).is_dir()]
    if any((Path(p) / "tasks").is_dir() for p in packages):  # `pip install .`, not `pip install -e .`
        pytest.skip("a regular install of this repository puts tasks/ beside torch: it cannot be hidden")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", STANDALONE, str(tmp_path), *packages],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "bam works alone"
