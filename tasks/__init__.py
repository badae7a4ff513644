"""Task modules (super-resolution, classification, scene parsing, detection) built on ``bam``."""

import datasets as _datasets

if not getattr(_datasets, "IS_BAM_DATASETS", False):  # pragma: no cover - environment problem
    raise ImportError(
        f"`datasets` resolved to {getattr(_datasets, '__file__', '?')}, which is not this repository's "
        "package (Hugging Face's `datasets` has the same name). Install this repository with "
        "`pip install -e .` in an environment without Hugging Face `datasets`, or run from the "
        "repository root."
    )
