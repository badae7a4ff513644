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

from conftest import embedded_sr_images
from tasks.sr import evaluate as sr_evaluate

REPO = Path(__file__).resolve().parents[1]


def _json(capsys, argv) -> dict:
    sr_evaluate.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bicubic_baseline_basicsr_protocol(sr_data_root, capsys):
    """BasicSR's own functions give these numbers."""
    scores = _json(capsys, ["--model", "bicubic", "--sets", "Set5", "Set14", "--json",
                            "--data-root", str(sr_data_root), "--device", "cpu"])
    assert list(scores) == ["Set5", "Set14"]
    assert set(scores["Set5"]) == {"psnr", "ssim", "images"}
    assert sorted(scores["Set5"]["images"]) == ["baby", "bird", "butterfly", "head", "woman"]
    mean = sum(image["psnr"] for image in scores["Set5"]["images"].values()) / 5
    assert scores["Set5"]["psnr"] == pytest.approx(mean, abs=1e-12)
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


def test_shipped_sets_reproduce_the_published_bicubic_figures_without_a_data_root(monkeypatch, capsys):
    """Set5/Set14 ship in datasets/sr, the default data root: no environment variable needed."""
    monkeypatch.delenv("BAM_DATA_ROOT", raising=False)
    scores = _json(capsys, ["--model", "bicubic", "--sets", "Set5", "Set14", "--json", "--device", "cpu"])
    assert round(scores["Set5"]["psnr"], 2) == 28.43 and round(scores["Set5"]["ssim"], 4) == 0.8113
    assert round(scores["Set14"]["psnr"], 2) == 26.09 and round(scores["Set14"]["ssim"], 4) == 0.7050


def _write_bicubic_results(folder: Path, sr_data_root: Path, noise: int = 0) -> dict:
    """Bicubic x4 outputs of Set5 saved as PNG files in folder/Set5 (what another method would
    leave); returns the uint8 arrays by image."""
    import numpy as np

    from tasks.data.imresize import imresize
    from tasks.utils.images import quantize

    written = {}
    dataset = sr_evaluate.load_sets(["Set5"], 4, sr_data_root)["Set5"]
    (folder / "Set5").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for item in dataset:
        up = quantize(imresize(quantize(item["lr"]).double(), 4.0), peak=255)[0] if item["lr"].dim() == 4 else \
            quantize(imresize(quantize(item["lr"]).double(), 4.0), peak=255)
        array = up.permute(1, 2, 0).numpy().astype(np.int16)
        array = np.clip(array + rng.integers(-noise, noise + 1, array.shape), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / "Set5" / f"{item['name']}.png")
        written[item["name"]] = (array, (item["hr"] * 255).round().byte().permute(1, 2, 0).numpy())
    return written


def test_results_folder_scores_bicubic_like_the_bicubic_baseline(tmp_path, sr_data_root, capsys):
    _write_bicubic_results(tmp_path / "bicubic", sr_data_root)
    saved = _json(capsys, ["--results", str(tmp_path / "bicubic"), "--sets", "Set5", "--json",
                           "--data-root", str(sr_data_root), "--device", "cpu"])
    baseline = _json(capsys, ["--model", "bicubic", "--sets", "Set5", "--json", "--data-root", str(sr_data_root),
                              "--device", "cpu"])
    assert saved["Set5"]["psnr"] == pytest.approx(28.4314, abs=0.005)  # the published figure
    for name, scores in baseline["Set5"]["images"].items():
        assert saved["Set5"]["images"][name] == pytest.approx(scores, abs=1e-9)


def test_results_folder_agrees_with_scikit_image_per_image(tmp_path, sr_data_root, capsys):
    """Noisy outputs, scored per image by an independent implementation of the BasicSR protocol:
    scikit-image's rgb2ycbcr (the same BT.601 Y), a crop of 4 pixels, its PSNR and SSIM."""
    import numpy as np
    from skimage.color import rgb2ycbcr
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    written = _write_bicubic_results(tmp_path / "noisy", sr_data_root, noise=6)
    scores = _json(capsys, ["--results", str(tmp_path / "noisy"), "--sets", "Set5", "--json",
                            "--data-root", str(sr_data_root), "--device", "cpu"])
    for name, (sr, hr) in written.items():
        y_sr, y_hr = (rgb2ycbcr(image)[4:-4, 4:-4, 0] for image in (sr, hr))
        psnr = peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
        ssim = structural_similarity(y_sr, y_hr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
        assert scores["Set5"]["images"][name]["psnr"] == pytest.approx(psnr, abs=1e-9), name
        assert scores["Set5"]["images"][name]["ssim"] == pytest.approx(ssim, abs=1e-9), name
    assert scores["Set5"]["psnr"] == pytest.approx(np.mean([s["psnr"] for s in scores["Set5"]["images"].values()]))


def test_results_folder_names_the_missing_or_missized_image(tmp_path, sr_data_root, capsys):
    _write_bicubic_results(tmp_path / "out", sr_data_root)
    (tmp_path / "out" / "Set5" / "bird.png").unlink()
    with pytest.raises(SystemExit):
        sr_evaluate.main(["--results", str(tmp_path / "out"), "--sets", "Set5", "--data-root", str(sr_data_root)])
    assert f"no SR image for Set5/bird: expected {tmp_path / 'out' / 'Set5' / 'bird'}.png" in capsys.readouterr().err
    Image.new("RGB", (10, 12)).save(tmp_path / "out" / "Set5" / "bird.jpg")
    with pytest.raises(SystemExit):
        sr_evaluate.main(["--results", str(tmp_path / "out"), "--sets", "Set5", "--data-root", str(sr_data_root)])
    err = capsys.readouterr().err
    assert "bird.jpg is 10x12, expected 288x288" in err and "Traceback" not in err


def test_evaluate_command_splits_the_images_over_processes(tmp_path):
    """accelerate launch --num_processes 2 -m tasks.sr.evaluate: each image scored once, one JSON."""
    bench = tmp_path / "bench"
    bench.mkdir()
    photos = embedded_sr_images("test")
    for i in range(5):
        Image.fromarray(photos[i % len(photos)][10 * i:10 * i + 32, 20 * i:20 * i + 40]).save(bench / f"img{i}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tasks.sr.evaluate",
               "--model", "bicubic", "--sets", str(bench), "--json", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # printed by the main process only
    double = json.loads(lines[0])["bench"]
    single = sr_evaluate.score_set(sr_evaluate.load_sets([bench], 4)["bench"], "bicubic", "basicsr")
    assert sorted(double["images"]) == sorted(single["images"]) == [f"img{i}" for i in range(5)]
    assert double["psnr"] == pytest.approx(single["psnr"], abs=1e-12)


def test_kept_outputs_are_the_networks_outputs_of_the_first_images(sr_data_root):
    """What the sample panels show is what was scored: ``keep`` hands back the network's own
    outputs of the first images instead of a second forward pass."""
    from tasks.sr.model import srresnet

    torch.manual_seed(0)
    model = srresnet(num_blocks=1, channels=4).eval()
    set5 = sr_evaluate.load_sets(["Set5"], 4)["Set5"]
    result = sr_evaluate.score_set(set5, model, "basicsr", keep=2)
    assert sorted(result["outputs"]) == [0, 1] and "outputs" not in sr_evaluate.score_set(set5, model, "basicsr")
    for index, kept in result["outputs"].items():
        with torch.no_grad():
            again = model(set5[index]["lr"][None])[0]
        assert kept.shape == again.shape and torch.allclose(kept, again, atol=1e-5)
