"""`python -m tasks.sr.evaluate`: the bicubic baseline on the real Set5/Set14, errors, and the
multi-process evaluation (every image counted once)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from tasks.data.embedded import embedded_sr_images
from tasks.sr import evaluate as sr_evaluate

REPO = Path(__file__).resolve().parents[1]


def _json(capsys, argv) -> dict:
    sr_evaluate.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bicubic_baseline_basicsr_protocol(sr_data_root, capsys):
    """Reference facts section 4 / the data README: BasicSR's own functions give these numbers."""
    scores = _json(capsys, ["--model", "bicubic", "--sets", "Set5", "Set14", "--json",
                            "--data-root", str(sr_data_root), "--device", "cpu"])
    assert list(scores) == ["Set5", "Set14"]
    assert set(scores["Set5"]) == {"psnr", "ssim"}
    assert scores["Set5"]["psnr"] == pytest.approx(28.4314, abs=0.005)
    assert scores["Set5"]["ssim"] == pytest.approx(0.8113, abs=0.0005)
    assert scores["Set14"]["psnr"] == pytest.approx(26.0918, abs=0.005)
    assert scores["Set14"]["ssim"] == pytest.approx(0.7050, abs=0.0005)


def test_bicubic_baseline_y_only_protocol(sr_data_root, capsys):
    """The older MATLAB protocol reproduces the literature's 28.42 dB on Set5 (EDSR, RCAN tables)."""
    scores = _json(capsys, ["--model", "bicubic", "--sets", "Set5", "--json", "--protocol", "y-only",
                            "--data-root", str(sr_data_root), "--device", "cpu"])
    assert scores["Set5"]["psnr"] == pytest.approx(28.42, abs=0.01)


def test_table_names_the_protocol(sr_data_root, capsys):
    sr_evaluate.main(["--model", "bicubic", "--sets", "Set5", "--data-root", str(sr_data_root), "--device", "cpu"])
    out = capsys.readouterr().out
    assert "| Set5 | 28.43" in out and "basicsr" in out


def test_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sr_evaluate.main(["--model", "bicubic", "--sets", "NoSuchSet", "--data-root", str(tmp_path)])
    assert exit_info.value.code == 2 and "NoSuchSet" in capsys.readouterr().err
    missing = tmp_path / "missing.pt"
    with pytest.raises(SystemExit):
        sr_evaluate.main(["--checkpoint", str(missing), "--sets", "Set5"])
    assert str(missing) in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one of --checkpoint / --model is required
        sr_evaluate.main(["--sets", "Set5"])


_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from accelerate import Accelerator
    from tasks.sr.evaluate import load_sets, score_set
    from tasks.sr.model import srresnet

    torch.manual_seed(0)
    model = srresnet(num_blocks=1, channels=4).eval()
    accelerator = Accelerator(cpu=True)
    result = score_set(load_sets([sys.argv[1]], 4)["bench"], model, "basicsr", accelerator)
    if accelerator.is_main_process:
        print("RESULT", json.dumps({"processes": accelerator.num_processes, **result}))
    from tasks.common.distributed import shutdown_distributed
    shutdown_distributed()
""")


def test_two_processes_score_like_one(tmp_path):
    """5 images over 2 gloo processes: the padded duplicate is dropped, nothing is missed."""
    bench = tmp_path / "bench"
    bench.mkdir()
    photos = embedded_sr_images("test")
    for i in range(5):
        image = photos[i % len(photos)]
        Image.fromarray(image[10 * i:10 * i + 32, 20 * i:20 * i + 40]).save(bench / f"img{i}.png")
    script = tmp_path / "score.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(script), str(bench)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT"))
    double = json.loads(line[len("RESULT "):])
    # The same model and images in this one process, without Accelerate.
    torch.manual_seed(0)
    from tasks.sr.model import srresnet

    model = srresnet(num_blocks=1, channels=4).eval()
    single = sr_evaluate.score_set(sr_evaluate.load_sets([bench], 4)["bench"], model, "basicsr")
    assert double["processes"] == 2
    assert sorted(double["images"]) == [f"img{i}" for i in range(5)]
    for name, scores in single["images"].items():
        assert double["images"][name]["psnr"] == pytest.approx(scores["psnr"], abs=1e-6)
    assert double["psnr"] == pytest.approx(single["psnr"], abs=1e-6)
    assert double["ssim"] == pytest.approx(single["ssim"], abs=1e-9)
    # The mean is over the 5 distinct images (a duplicate would shift it).
    mean = sum(s["psnr"] for s in single["images"].values()) / 5
    assert single["psnr"] == pytest.approx(mean, abs=1e-9)
