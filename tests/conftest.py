import os
from pathlib import Path

import pytest
import torch

# Tests never talk to W&B servers and never use more threads than CI has cores.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sr_data_root() -> Path:
    """The data root holding the real Set5/Set14/T91 images (CI sets BAM_DATA_ROOT)."""
    from tasks.data.root import data_root

    root = data_root()
    if not (root / "sr" / "Set5").is_dir():
        candidate = REPO.parent / "shared" / "data"
        if (candidate / "sr" / "Set5").is_dir():
            return candidate
        message = f"benchmark images not found under {root}/sr (set BAM_DATA_ROOT)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has them: a missing folder is a set-up error there
        pytest.skip(message)
    return root
