"""Shared training machinery: CLI options, the Accelerate trainer, checkpoints, tracking, summaries.

Imports are lazy so that ``tasks.common.cli`` stays cheap for ``--help``.
"""

from importlib import import_module

_EXPORTS = {
    "add_run_args": "cli", "add_data_args": "cli", "run_dir_for": "cli", "run_cli": "cli",
    "Trainer": "trainer", "NonFiniteLossError": "trainer", "prepare_eval_loader": "trainer",
    "make_accelerator": "trainer",
    "Tracker": "tracking", "resolve_wandb_mode": "tracking",
    "write_summary": "summary", "load_summary": "summary", "environment_info": "summary",
    "seed_everything": "seeding",
    "EpochSeededSampler": "sampling", "SeededDataset": "sampling", "split_key": "sampling", "key_generator": "sampling",
    "sample_seed": "sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
