"""Tracking (W&B offline + local metrics.jsonl) and run summaries."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.common.summary import environment_info, load_summary, render_markdown, write_summary
from tasks.common.tracking import Tracker, default_tags, resolve_wandb_mode
from conftest import wait_for_records, wandb_history, wandb_run_record, wandb_summary

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_wandb_env(monkeypatch, tmp_path):
    """No key, no netrc, no WANDB_MODE: what a fresh machine looks like."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))


def test_offline_run_records_config_history_and_summary(tmp_path, no_wandb_env, capsys):
    config = {"arch": "resnet18", "attention": "bam", "dataset": "cifar100", "lr": 0.1}
    tracker = Tracker(tmp_path / "run", config, project="bam-test", group="exp1", tags=["ablation"],
                      mode="auto", task="classify")
    assert tracker.mode == "offline"  # no key: never online, never a prompt
    tracker.start(run_id="abc123")
    for step in (1, 2, 3):
        tracker.log({"loss": 1.0 / step}, step)
    tracker.log({"top1_err": 30.5}, 3, split="eval")
    tracker.log_images({"panel": Image.new("RGB", (8, 8)), "array": np.zeros((4, 4, 3), np.uint8)}, 3,
                       caption="sample")
    tracker.update_summary({"best": {"top1_err": 30.5}})
    offline = tracker.offline_dir()
    tracker.finish()
    assert f"wandb sync {offline}" in capsys.readouterr().out

    assert offline.parent == tmp_path / "run" / "wandb" and offline.name.startswith("offline-run-")
    records = wait_for_records(next(offline.glob("run-abc123.wandb")))
    run = wandb_run_record(records)
    assert (run.run_id, run.project, run.run_group, run.job_type) == ("abc123", "bam-test", "exp1", "classify")
    assert list(run.tags) == ["classify", "resnet18", "bam", "cifar100", "ablation"]
    run_config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert {k: run_config[k] for k in config} == config
    history = wandb_history(records)
    losses = [(h["_step"], h["train/loss"]) for h in history if "train/loss" in h]
    assert losses == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert any(h.get("eval/top1_err") == 30.5 for h in history)
    assert any(h.get("panel/_type") == "image-file" and h.get("panel/caption") == "sample" for h in history)
    assert wandb_summary(records)["best/top1_err"] == 30.5
    # The local history is written whatever W&B does.
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0] == {"step": 1, "split": "train", "loss": 1.0}
    assert lines[-1] == {"step": 3, "split": "eval", "top1_err": 30.5}


def test_disabled_mode_and_truncation_write_only_local_files(tmp_path):
    tracker = Tracker(tmp_path, {"arch": "x"}, mode="disabled")
    for step in range(1, 6):
        tracker.log({"loss": float(step)}, step)
    tracker.log({"psnr/Set5": 30.0}, 5, split="eval")
    tracker.finish()
    assert not (tmp_path / "wandb").exists()
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 6, "spl')  # a line cut by a kill
    tracker.truncate_history(3)  # a run resumed from step 3 redoes steps 4..
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_wandb_failure_never_stops_the_run(tmp_path, no_wandb_env, monkeypatch, capsys):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("service crashed")

    monkeypatch.setattr(wandb, "init", broken_init)
    tracker = Tracker(tmp_path, {}, mode="offline")
    tracker.log({"loss": 1.0}, 1)
    tracker.log({"loss": 0.5}, 2)
    tracker.log_images({"x": np.zeros((2, 2, 3), np.uint8)}, 2)
    tracker.finish()
    output = capsys.readouterr().err
    assert output.count("warning: W&B could not start (RuntimeError: service crashed)") == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


class _Server:
    """A local W&B host that is there and is not: it refuses connections, accepts them and never
    answers, answers plain HTTP (the probe) but never the API, or answers the API with 401 (a
    key it does not know)."""

    def __init__(self, kind: str) -> None:
        import socket
        import threading

        self.kind, self.held, self.http = kind, [], None
        if kind in ("api-hangs", "rejects-key"):
            from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

            class Handler(BaseHTTPRequestHandler):
                def do_HEAD(self):
                    self.send_response(200)
                    self.end_headers()

                def do_POST(self):  # GraphQL
                    if kind == "api-hangs":  # never answered
                        time.sleep(120)
                        return
                    body = b'{"errors": [{"message": "invalid API key"}]}'
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args):
                    pass

            self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self.http.daemon_threads = True
            self.port = self.http.server_address[1]
            threading.Thread(target=self.http.serve_forever, daemon=True).start()
            return
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        if kind == "refuses":
            self.socket.close()
            return
        self.socket.listen(16)

        def accept():
            while True:
                try:
                    self.held.append(self.socket.accept()[0])  # and then silence
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()

    def close(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        elif self.kind != "refuses":
            self.socket.close()
        for connection in self.held:
            connection.close()


def test_failed_online_start_falls_back_to_offline(tmp_path, no_wandb_env, monkeypatch, capsys):
    """An online start that fails (here: the host rejects the key) is torn down and recorded offline
    under the same run id; without the tear-down W&B's service keeps that id reserved and the
    offline run would get a fresh one (so a resumed run would split in two)."""
    import wandb

    wandb.teardown()  # W&B's service keeps the address it started with: a fresh one sees this server
    server = _Server("rejects-key")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    try:
        tracker = Tracker(tmp_path, {"lr": 0.1}, mode="online", task="sr")
        assert tracker.mode == "online"  # a key: the user's explicit choice is tried
        tracker.start(run_id="keep1234")  # the id a resumed run's checkpoint holds
        tracker.log({"loss": 1.0}, 1)
        offline = tracker.offline_dir()
        tracker.finish()
    finally:
        server.close()
    assert tracker.mode == "offline" and tracker.run_id == "keep1234"
    output = "".join(capsys.readouterr())  # the warning on stderr, the sync command on stdout
    said = [line for line in output.splitlines() if "offline instead" in line]
    assert len(said) == 1 and said[0].startswith("warning: W&B could not start online (") and \
        "invalid API key" in said[0], output
    assert f"wandb sync {offline}" in output
    # One offline run, under the run's own id, holding what was logged.
    assert list((tmp_path / "wandb").glob("offline-run-*")) == [offline]
    records = wait_for_records(offline / "run-keep1234.wandb")
    assert (wandb_run_record(records).run_id, wandb_run_record(records).job_type) == ("keep1234", "sr")
    assert [(h["_step"], h["train/loss"]) for h in wandb_history(records) if "train/loss" in h] == [(1, 1.0)]
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "split": "train", "loss": 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("kind, mode", [("refuses", "auto"), ("silent", "auto"), ("api-hangs", "auto"),
                                        ("silent", "online")])
def test_a_key_without_network_records_offline_in_full_within_the_bound(tmp_path, no_wandb_env, monkeypatch,
                                                                        capsys, kind, mode):
    import wandb

    wandb.teardown()  # W&B's service keeps the address it started with: a fresh one sees this server
    server = _Server(kind)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("BAM_WANDB_TIMEOUT", "2")  # the default is 15 s
    try:
        tracker = Tracker(tmp_path / "run", {"lr": 0.1}, project="bam-test", mode=mode, task="sr")
        tracker.start(run_id="keep1234")
        for step in (1, 2):
            tracker.log({"loss": 1.0 / step}, step)
        offline = tracker.offline_dir()
        tracker.finish()
    finally:
        server.close()
    assert tracker.mode == "offline" and tracker.run_id == "keep1234"  # a resumed run keeps its W&B run
    output = capsys.readouterr().err
    said = [line for line in output.splitlines() if "offline instead" in line]
    expected = "could not start online" if kind == "api-hangs" or mode == "online" else "did not answer within 2 s"
    assert len(said) == 1 and expected in said[0], output
    records = wait_for_records(next(offline.glob("run-keep1234.wandb")))
    history = wandb_history(records)
    assert [(h["_step"], h["train/loss"]) for h in history if "train/loss" in h] == [(1, 1.0), (2, 0.5)]


def test_wandb_timeout_setting_is_checked(monkeypatch):
    from tasks.common.tracking import online_timeout

    monkeypatch.setenv("BAM_WANDB_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="BAM_WANDB_TIMEOUT='soon' must be a positive number of seconds"):
        online_timeout()
    monkeypatch.setenv("BAM_WANDB_TIMEOUT", "2.5")
    assert online_timeout() == 2.5


def test_only_the_main_process_writes(tmp_path, monkeypatch):
    from accelerate import PartialState

    # An Accelerator made by an earlier test would answer for this process; forget it.
    monkeypatch.setattr(PartialState, "_shared_state", {})
    monkeypatch.setenv("RANK", "1")
    tracker = Tracker(tmp_path / "run", {}, mode="offline")
    assert tracker.mode == "disabled"
    tracker.log({"loss": 1.0}, 1)
    tracker.finish()
    assert not (tmp_path / "run").exists()


def test_mode_resolution(no_wandb_env, monkeypatch, tmp_path, capsys):
    assert resolve_wandb_mode("auto") == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"
    assert resolve_wandb_mode("online") == "offline"  # would prompt for a login otherwise
    assert "warning: --wandb online: no W&B API key" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    # A key in ~/.netrc but the host does not answer (closed local port): offline, after a probe
    # bounded by the 3 s it names.
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / ".netrc").write_text("machine 127.0.0.1\n  login user\n  password secret\n")
    (home / ".netrc").chmod(0o600)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    capsys.readouterr()
    assert resolve_wandb_mode("auto") == "offline"
    assert capsys.readouterr().err == ("note: W&B at http://127.0.0.1:9 did not answer within 3 s; recording offline "
                                       "instead (upload later with `wandb sync`)\n")
    monkeypatch.setenv("BAM_WANDB_TIMEOUT", "1")  # a shorter online bound shortens the probe too
    assert resolve_wandb_mode("auto") == "offline" and "did not answer within 1 s" in capsys.readouterr().err
    assert resolve_wandb_mode("online") == "online"  # a key is there: the user's explicit choice


def test_default_tags():
    assert default_tags({"arch": "resnet50", "attention": "none", "dataset": "imagenet"}, "classify") == \
        ["classify", "resnet50", "baseline", "imagenet"]
    assert default_tags({"arch": "srresnet", "attention": "bam-released"}, "sr", ["x", "sr"]) == \
        ["sr", "srresnet", "bam", "x"]
    assert default_tags({"attention": "se"}) == ["se"]


# -- summary --------------------------------------------------------------------------------------
def test_environment_info_names_the_commit_and_the_machine():
    info = environment_info()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert info["git_commit"] == (commit.stdout.strip() or None)
    assert isinstance(info["git_dirty"], bool) or info["git_commit"] is None
    import accelerate
    import torch

    assert info["torch"] == torch.__version__ and info["accelerate"] == accelerate.__version__
    assert info["wandb"] and info["torchvision"]
    assert info["cpu_count"] >= 1 and info["gpu_count"] == len(info["gpus"]) and info["num_processes"] == 1
    assert info["hostname"] and info["cpu"]


def test_environment_info_without_wandb_installed(monkeypatch):
    # --wandb disabled runs without wandb (a GPU box may lack it): its version is then unknown.
    version = importlib.metadata.version

    def installed(package):
        if package == "wandb":
            raise importlib.metadata.PackageNotFoundError(package)
        return version(package)

    monkeypatch.setattr(importlib.metadata, "version", installed)
    info = environment_info()
    assert info["wandb"] is None and info["torchvision"]


def test_summary_files_round_trip_and_read_well(tmp_path):
    summary = {
        "task": "sr", "name": "srresnet-bam", "group": "sr-x4", "arch": "srresnet", "attention": "bam",
        "dataset": "t91", "seed": 0, "config": {"lr": 1e-4, "scale": 4, "nested": {"skip": 1}},
        "git_commit": "0123456789abcdef", "git_dirty": True, "hardware": {"hostname": "box", "gpus": ["H100"],
                                                                         "num_processes": 1},
        "params": 1_547_267, "macs": 2_345_000_000, "final": {"psnr/Set5": 31.2, "ssim/Set5": 0.88},
        "best": {"psnr/Set5": 31.5, "ssim/Set5": 0.881}, "best_step": 9000, "steps": 10000,
        "wall_time_s": 3725.4, "history_file": "metrics.jsonl", "primary_metric": "psnr/Set5",
        "primary_mode": "max", "status": "completed",
    }
    write_summary(tmp_path, summary)
    assert load_summary(tmp_path) == summary
    assert load_summary(tmp_path / "summary.json") == summary
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("# sr: srresnet-bam\n")
    assert "| **psnr/Set5** | 31.2000 | 31.5000 |" in markdown
    assert "| ssim/Set5 | 0.8800 | 0.8810 |" in markdown
    assert "| params | 1.547M (1,547,267) |" in markdown and "| MACs | 2.345G (2,345,000,000) |" in markdown
    assert "| wall time | 1:02:05 (3725 s) |" in markdown and "0123456789ab (dirty)" in markdown
    assert "highest `psnr/Set5` (step 9000)" in markdown and "| scale | 4 |" in markdown
    assert "GPUs: H100" in markdown
    assert render_markdown({"final": {}, "best": {}}).startswith("# run: run")


def test_load_summary_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "summary.json")):
        load_summary(tmp_path)
    (tmp_path / "summary.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON: .*summary.json"):
        load_summary(tmp_path)


def test_a_run_folder_that_is_not_utf8_gets_one_warning_and_local_files(tmp_path, no_wandb_env, capfd):
    import os

    run = tmp_path / os.fsdecode(b"run-\xff")  # a byte that is not UTF-8, as old file systems hold
    tracker = Tracker(run, {"train_dir": os.fsdecode(b"/data/t\xe9l\xe9")}, mode="offline", task="sr")
    tracker.log({"loss": 1.0}, 1)
    tracker.finish()
    [line] = capfd.readouterr().err.splitlines()  # no logging tracebacks (the stray byte prints as an escape or "?")
    assert line.startswith("warning: W&B cannot record in ") and (
        ": its path is not valid UTF-8, and W&B takes UTF-8 paths only (rename the folder to have the run in W&B "
        "too); continuing with local files in ") in line
    assert json.loads((run / "metrics.jsonl").read_text()) == {"step": 1, "split": "train", "loss": 1.0}


def test_wandb_stays_quiet_and_records_with_home_unset(tmp_path):
    """Schedulers may start jobs without HOME: W&B's service then prints its whole log on stderr."""
    import os
    import sys

    # (without WANDB_SERVICE too: a W&B service this process started would do the child's work)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HOME", "XDG_CACHE_HOME", "WANDB_CACHE_DIR", "WANDB_MODE", "WANDB_SERVICE")}
    script = ("from tasks.common.tracking import Tracker\n"
              f"tracker = Tracker({str(tmp_path / 'run')!r}, {{'lr': 0.1}}, mode='offline', task='sr')\n"
              "tracker.log({'loss': 1.0}, 1)\n"
              "tracker.finish()\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    sync = f"W&B run recorded offline; upload it with: wandb sync {tmp_path / 'run' / 'wandb' / 'offline-run-'}"
    assert result.stdout.startswith(sync)
    assert (tmp_path / "run" / "wandb" / "cache").is_dir()  # W&B's own logs, in the run folder
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
