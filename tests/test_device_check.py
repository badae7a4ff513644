"""benchmarks/device_check.sh runs at tiny sizes on a CPU, so that its first GPU run works.

Nothing is timed here: the runs check that every code path of the check runs (eager and compiled
steps, the T91 pipeline with the training loader, Set14 scoring), on a machine without wandb,
and that the files it writes hold every target line of issue 7.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.common.compile import BACKEND_ENV
from tasks.utils import messages

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_check.sh"
VERDICTS = {"PASS", "FAIL", "NOT MEASURED"}


def _load_device_check():
    path = REPO / "benchmarks" / "device_check.py"
    spec = importlib.util.spec_from_file_location("bam_device_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _verdicts(out: Path) -> dict[str, str]:
    """{target text: verdict} from summary.md's table."""
    rows = [line.split(" | ") for line in (out / "summary.md").read_text().splitlines() if line.startswith("| ")]
    return {row[0].lstrip("| "): row[-1].rstrip(" |") for row in rows[2:]}  # after header and rule


def test_tiny_run_without_wandb_writes_every_table_and_target(tmp_path, sr_data_root):
    # A bare GPU machine has no wandb (nor matplotlib, scikit-learn): make them unimportable.
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('wandb', 'matplotlib', 'sklearn'):\n    sys.modules[name] = None\n")
    env = {**os.environ, "PYTHONPATH": str(blocker), "BAM_DATA_ROOT": str(sr_data_root), "PYTHON": sys.executable}
    out = tmp_path / "check"
    done = subprocess.run(["bash", str(SCRIPT), str(out), "--tiny", "--eager-only"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"summary.md", "steps.md", "pipeline.md", "metrics.md", "results.json"}

    module = _load_device_check()
    verdicts = _verdicts(out)
    assert list(verdicts) == [target.text for target in module.TARGETS]
    assert set(verdicts.values()) <= {"PASS", "FAIL"}  # everything measured (eager only)
    summary = (out / "summary.md").read_text()
    assert "Device check: CPU" in summary and "(--tiny)" in summary and "Elapsed:" in summary
    steps = (out / "steps.md").read_text()
    assert steps.count("| eager |") == 3 and "ResNet50 (32^2)" in steps and "batch 4, bf16 + channels_last" in steps
    pipeline = (out / "pipeline.md").read_text()
    assert "sr16 (eager)" in pipeline and "sr64 (eager)" in pipeline and "end to end / step only" in pipeline
    assert "Set14 (14 images)" in (out / "metrics.md").read_text()
    record = json.loads((out / "results.json").read_text())
    assert [t["verdict"] for t in record["targets"]] == list(verdicts.values())


def test_tiny_compiled_steps_feed_the_pipeline(tmp_path, sr_data_root, monkeypatch, capsys):
    """The compiled mode (CUDA graphs on a GPU, plain compile here) and the pipeline reusing it."""
    monkeypatch.setenv(BACKEND_ENV, "aot_eager")  # Inductor's C++ would take minutes here
    monkeypatch.setattr(messages, "_noted", set())  # notes said by earlier tests are said again
    module = _load_device_check()
    out = tmp_path / "check"
    module.main([str(out), "--tiny", "--jobs", "sr16", "--data-root", str(sr_data_root)])
    assert "CUDA graphs, which need a CUDA device" in capsys.readouterr().err
    record = json.loads((out / "results.json").read_text())
    compiled = [m for m in record["steps"] if m["mode"] == "compile-cudagraphs"]
    assert len(compiled) == 1 and set(compiled[0]["rates"]) == {"none", "bam"}
    assert compiled[0]["counters"]["bam"]["graph breaks"] == 0 and compiled[0]["counters"]["bam"]["graphs"] >= 1
    assert record["pipeline"]["sr16"]["mode"] in ("eager", "compile-cudagraphs")
    verdicts = _verdicts(out)
    measured = {text for text, verdict in verdicts.items() if verdict != "NOT MEASURED"}
    assert len(measured) == 4  # sr16's extra time, rate and pipeline; Set14
    assert all("batch 16" in text or "Set14" in text for text in measured)


def test_out_of_time_skips_failures_and_interruptions_still_write_the_summary(tmp_path, sr_data_root,
                                                                               monkeypatch):
    module = _load_device_check()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what device_check.sh's time limit sends

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel image is available")

    monkeypatch.setattr(module.bench, "metrics_time", broken)
    out = tmp_path / "check"
    assert module.main([str(out), "--tiny", "--budget-s", "0", "--data-root", str(sr_data_root)]) == 1
    verdicts = _verdicts(out)
    assert len(verdicts) == len(module.TARGETS) and set(verdicts.values()) == {"NOT MEASURED"}
    summary = (out / "summary.md").read_text()
    assert "sr16 eager: skipped, predicted to end after the 0 s budget" in summary
    assert "Set14 metrics: failed: RuntimeError: no kernel image is available" in summary

    monkeypatch.setattr(module.bench, "metrics_time", interrupted)
    assert module.main([str(out), "--tiny", "--budget-s", "0", "--data-root", str(sr_data_root)]) == 130
    assert "interrupted at" in (out / "summary.md").read_text()


def test_bad_jobs_are_named():
    module = _load_device_check()
    with pytest.raises(SystemExit):
        module.parse_args(["out", "--jobs", "sr32"])
