"""Where data code and data live: ``tasks.data`` imports nothing of the training side, and the
top-level datasets/ folder is data, not a package: Hugging Face's ``datasets`` (which Accelerate
imports) must be the one ``import datasets`` finds, even from the repository root."""

import ast
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = ("tasks.data", "tasks.utils")  # what the data code may import of the repository
REPOSITORY_PACKAGES = ("tasks", "bam", "launch", "datasets")


def _imported_modules(path: Path, package: str) -> list[str]:
    """Every module a file of ``package`` imports, at the top or inside functions (lazy imports
    count too), relative imports written out in full."""
    parts, names = package.split("."), []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = parts[:len(parts) + 1 - node.level] if node.level else []  # "." is the package
            names.append(".".join(parent + ([node.module] if node.module else [])))
    return names


def _of_the_repository(name: str) -> bool:
    return name.split(".")[0] in REPOSITORY_PACKAGES


def _allowed(name: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in ALLOWED)


def test_data_code_imports_only_data_and_utils():
    wrong = [f"{path.name}: {name}" for path in sorted((REPO / "tasks" / "data").glob("*.py"))
             for name in _imported_modules(path, "tasks.data")
             if _of_the_repository(name) and not _allowed(name)]
    assert not wrong, f"tasks/data imports the training side: {wrong}"


def test_datasets_folder_is_not_a_package():
    assert (REPO / "datasets" / "README.md").is_file()
    assert not (REPO / "datasets" / "__init__.py").exists()
    assert not (REPO / "datasets.py").exists()


def test_import_datasets_from_the_repository_root_finds_hugging_face():
    try:
        hugging_face = Path(distribution("datasets").locate_file("datasets/__init__.py")).resolve()
    except PackageNotFoundError:
        pytest.skip("Hugging Face's datasets is not installed")
    # The repository root is the first entry of sys.path here, as for any command run from it.
    found = subprocess.run([sys.executable, "-c", "import datasets; print(datasets.__file__)"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip().splitlines()[-1]).resolve() == hugging_face
