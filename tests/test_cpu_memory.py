"""CPU processes reuse the memory of freed tensors instead of faulting fresh pages in every step."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks.utils import processes

REPO = Path(__file__).resolve().parents[1]

# Page faults per training step of a BAM on a ResNet50-sized map (4 x 256 x 32 x 32, 4 MiB a map):
# its forward and backward write ~40 MiB of fresh tensors a step.
_STEP = textwrap.dedent("""
    import resource
    import torch
    {setup}
    from bam import BAM
    torch.manual_seed(0)
    bam, x = BAM(256), torch.randn(4, 256, 32, 32, requires_grad=True)
    def step():
        bam(x).sum().backward()
    step(); step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
""")

_SETUPS = {
    "default": "",
    "training command": "from tasks.common.distributed import make_accelerator; make_accelerator('no', cpu=True)",
}


def _page_faults(setup: str) -> int:
    code = _STEP.format(setup=_SETUPS[setup])  # run in the checkout: its bam and tasks come first
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and its page faults")
def test_a_cpu_training_process_keeps_freed_memory_for_the_next_step():
    default = _page_faults("default")
    if default < 1000:
        pytest.skip(f"this C library keeps freed memory by itself ({default} page faults a step)")
    # glibc 2.36 hands freed blocks back to the kernel: every step faults thousands of pages in
    # again (2,800-5,800 in five runs; 0-210 with the training commands' setting).
    kept = _page_faults("training command")
    assert kept <= default // 5, (kept, default)


def test_keep_freed_memory_leaves_other_c_libraries_alone(monkeypatch):
    monkeypatch.setattr(processes.platform, "libc_ver", lambda *args, **kwargs: ("", ""))
    assert processes.keep_freed_memory() is False
