"""Faults a shared cluster brings: upscaling that overwrites or runs out of memory, model files
whose arguments would allocate gigabytes, private files, pickles that would run code, unreadable
random-number files, paths that are not UTF-8. docs/reliability.md lists each with its test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SR_TINY, cli_error, embedded_sr_images, error_line, make_toy_trainer

REPO = Path(__file__).resolve().parents[1]
NOT_UTF8 = os.fsdecode(b"run-\xff")  # a folder name with a byte that is not UTF-8


def _tiny_sr_model(folder: Path, **kwargs) -> Path:
    from tasks.common.model_io import ModelDescription, save_model

    description = ModelDescription("tasks.sr.model:srresnet", {"num_blocks": 1, "channels": 8, **kwargs}, "sr", {})
    torch.manual_seed(0)
    return save_model(folder, description.build(), description)


def _photo(path: Path, height: int = 20, width: int = 24, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- tasks.sr.upscale: overwrites -------------------------------------------------------------------------
def test_upscale_refuses_two_inputs_with_one_output(tmp_path, capsys):
    from tasks.sr import upscale

    model = _tiny_sr_model(tmp_path / "model")
    photos = tmp_path / "photos"
    _photo(photos / "photo.png", seed=1)
    _photo(photos / "photo.jpg", seed=2)
    out = tmp_path / "x4"
    argv = ["--checkpoint", str(model), "--input", str(photos), "--output-dir", str(out)]
    line = error_line(cli_error(capsys, upscale.main, argv))
    assert line == (f"error: {photos / 'photo.jpg'} and {photos / 'photo.png'} would both be upscaled to "
                    f"{out / 'photo.png'}: rename one of them or upscale them separately")
    assert not out.exists()  # refused before anything was written


def test_upscale_refuses_to_replace_its_inputs(tmp_path, capsys):
    from tasks.sr import upscale

    model = _tiny_sr_model(tmp_path / "model")
    photos = tmp_path / "photos"
    _photo(photos / "a.png", seed=1)
    _photo(photos / "x4" / "a.png", seed=2)  # an original that happens to sit where an output would go
    before = _snapshot(photos)

    def refused(output: Path, source: Path | None = None) -> str:
        argv = ["--checkpoint", str(model), "--input", str(source or photos), "--output-dir", str(output)]
        return error_line(cli_error(capsys, upscale.main, argv))

    assert refused(photos) == (f"error: --output-dir {photos} is the --input folder: the upscaled PNGs would replace or "
                               "mix with the originals; choose another folder")
    assert refused(photos / "x4") == (f"error: --output-dir {photos / 'x4'}: writing {photos / 'x4' / 'a.png'} would "
                                      f"replace the input {photos / 'x4' / 'a.png'}; choose an --output-dir outside "
                                      "the input folder")
    assert "would replace the input" in refused(photos, source=photos / "a.png")  # one file, into its own folder
    assert _snapshot(photos) == before


# -- tasks.sr.upscale: memory -----------------------------------------------------------------------------
def _random_sr_network(num_blocks: int = 6):
    """SRResNet with random weights whose trunk shapes the output (its last conv is not zero)."""
    from tasks.sr.model import srresnet

    torch.manual_seed(0)
    model = srresnet(num_blocks=num_blocks, channels=8, global_residual=True).eval()
    torch.nn.init.normal_(model.tail.weight, std=0.1)
    return model


def test_tiled_upscale_equals_the_whole_image_within_rounding():
    from tasks.sr.upscale import profile_network, upscale_image

    model = _random_sr_network()
    profile = profile_network(model, 4)
    # 9x9 head: 4, six blocks: 12, body tail: 1, upsamplers: 1 + 1/2, 9x9 tail at 4x: 1; bicubic: 2
    assert profile.context == 22 and not profile.global_pooling
    image = np.random.default_rng(0).integers(0, 256, (37, 29, 3), dtype=np.uint8)
    whole = upscale_image(model, image, 4).astype(int)  # the independent reference: one pass, no tiles
    tiled = upscale_image(model, image, 4, tile=8, context=profile.context).astype(int)
    assert tiled.shape == whole.shape == (148, 116, 3)
    assert np.abs(tiled - whole).max() <= 1 and (tiled != whole).mean() < 1e-3
    # The comparison sees seams: too little context changes the result.
    assert np.abs(upscale_image(model, image, 4, tile=8, context=2).astype(int) - whole).max() > 1


def test_upscale_tiles_an_image_that_would_not_fit_and_says_so(tmp_path, monkeypatch, capsys):
    from tasks.sr import upscale

    model = _tiny_sr_model(tmp_path / "model")
    photos = tmp_path / "photos"
    _photo(photos / "big.png", 96, 80)
    _photo(photos / "small.png", 8, 8)
    common = ["--checkpoint", str(model), "--input", str(photos)]
    upscale.main([*common, "--output-dir", str(tmp_path / "whole"), "--tile", "0"])
    capsys.readouterr()
    # 96x80 LR pixels at 2 KB each (4 copies of 8 channels x 16 output pixels in float32) take 15 MB
    # whole; with 16 MB free, half of it holds tiles of 32 with their 12 pixels of context.
    monkeypatch.setattr(upscale, "free_memory", lambda device: 16 * 2**20)
    upscale.main([*common, "--output-dir", str(tmp_path / "auto")])
    notes = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if "note: " in line]
    assert len(notes) == 1 and notes[0].endswith(
        f"note: {photos / 'big.png'} (80x96) would need about 15 MB to upscale whole, more than half of the 16 MB "
        "free on cpu: upscaling in 32x32 tiles (the result is the whole image's; --tile N sets the size, --tile 0 "
        "turns tiling off)")
    for name in ("big.png", "small.png"):
        whole, auto = (np.asarray(Image.open(tmp_path / folder / name)).astype(int) for folder in ("whole", "auto"))
        assert np.abs(whole - auto).max() <= 1


def _in_a_fresh_process(script: str, limit_gb: float | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` in a new Python (peak memory of its own, ``ulimit -v`` set from inside it, one
    thread so that no thread start fails under the limit)."""
    prologue = f"import re, resource, sys\nimport torch\nsys.path.insert(0, {str(REPO)!r})\n"
    if limit_gb is not None:  # room above what the interpreter and torch already take
        prologue += textwrap.dedent(f"""\
            used = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (used + {int(limit_gb * 2**30)}, resource.RLIM_INFINITY))
            """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(script)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_tiled_upscale_memory_is_bounded_by_the_tile(tmp_path):
    """600x600 LR -> 2400x2400: its float output alone takes 66 MB, in 8 bits 16 MB."""
    model = _tiny_sr_model(tmp_path / "model")
    _photo(tmp_path / "photos" / "large.png", 600, 600)
    result = _in_a_fresh_process(f"""
        import numpy as np
        from tasks.common.model_io import load_model
        from tasks.data.images import read_rgb
        from tasks.sr.upscale import profile_network, upscale_image
        model = load_model({str(model)!r})[0].eval()
        image = read_rgb({str(tmp_path / "photos" / "large.png")!r})
        context = profile_network(model, 4).context
        upscale_image(model, image[:64, :64], 4, tile=48, context=context)  # warm: allocator, kernels
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = upscale_image(model, image, 4, tile=48, context=context)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, out.shape)
        """)
    assert result.returncode == 0, result.stderr
    grown, shape = result.stdout.split(maxsplit=1)
    assert shape.strip() == "(2400, 2400, 3)"
    assert int(grown) < 40 * 2**20  # the 8-bit output and one tile's pass, not a float canvas of 66 MB


def test_an_allocation_failure_is_one_line_with_a_hint(tmp_path):
    model = _tiny_sr_model(tmp_path / "model")
    photo = _photo(tmp_path / "photos" / "wide.png", 700, 800)  # whole: about 1 GB, in 0.5 GB of room
    result = _in_a_fresh_process(f"""
        from tasks.sr import upscale
        upscale.main(["--checkpoint", {str(model)!r}, "--input", {str(photo)!r}, "--output-dir", {str(tmp_path / "x4")!r},
                      "--tile", "0"])
        """, limit_gb=0.5)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: not enough memory on cpu to upscale {photo} (800x700, output 3200x2800: 26 MB in "
                           "8 bits alone): ")
    assert line.endswith("; leave --tile out to tile automatically, or give e.g. --tile 256, or free memory")


# -- network.json: sizes checked against the weights before anything is built ------------------------------
def test_model_arguments_are_checked_against_the_weights_before_anything_is_built(tmp_path):
    from tasks.common.model_io import load_model

    path = _tiny_sr_model(tmp_path / "model")
    record = json.loads(path.read_text())
    weights = path.with_name("network.safetensors")
    path.write_text(json.dumps({**record, "kwargs": {"num_blocks": 1, "channels": 1200}}))
    # Built for real, 1,200 channels would take about 600 MB before the weights are compared.
    result = _in_a_fresh_process(f"""
        from tasks.common.model_io import load_model
        import bam, tasks.sr.model  # imported by the builder; not the memory under test
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_model({str(path)!r})
        except ValueError as error:
            print(error)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
        """)
    message, grown = result.stdout.strip().rsplit("\n", 1)
    assert message.startswith(f"{weights}: the stored weights do not fit the network that tasks.sr.model:srresnet "
                              "builds from the stored arguments (head.0.weight: stored [8, 3, 9, 9], built "
                              "[1200, 3, 9, 9]; ")
    assert int(grown) < 50 * 2**20, result.stderr
    path.write_text(json.dumps({**record, "kwargs": {"num_blocks": 2000, "channels": 8}}))
    with pytest.raises(ValueError, match=f"^{path}: the stored arguments build far more tensors than the 33 that "
                                         f"{weights} holds$"):
        load_model(path)


def test_deeply_nested_json_is_a_damaged_file_not_a_recursion_error(tmp_path):
    from tasks.common.checkpoint import find_damaged_file, read_trainer_state
    from tasks.common.model_io import load_model

    path = _tiny_sr_model(tmp_path / "model")
    nested = "[" * 100_000 + "]" * 100_000
    path.write_text(f'{{"format": "bam-model/2", "kwargs": {nested}}}')
    with pytest.raises(ValueError, match=f"^{path} is not a readable model description \\(maximum recursion depth"):
        load_model(path)
    state = tmp_path / "model" / "trainer_state.json"
    state.write_text(nested)
    with pytest.raises(ValueError, match="checkpoint state file is not valid JSON"):
        read_trainer_state(tmp_path / "model")
    assert find_damaged_file(tmp_path / "model")[0] == path


def test_a_model_under_a_path_that_is_not_utf8_loads(tmp_path):
    from tasks.common.model_io import load_model

    folder = tmp_path / NOT_UTF8 / "checkpoints" / "best"
    _tiny_sr_model(folder)
    reference = _tiny_sr_model(tmp_path / "plain")
    loaded, _ = load_model(folder.parent.parent)
    expected, _ = load_model(reference)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), expected.state_dict().values()))


# -- files a group shares ---------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_get_the_permissions_of_the_umask(tmp_path, umask, mode):
    from tasks.common.model_io import ModelDescription, save_model
    from tasks.utils.files import write_json_atomic, write_png_atomic, write_text_atomic

    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as handle:  # what a plain open() gives: the reference
            handle.write("x")
        write_json_atomic(tmp_path / "config.json", {"a": 1})
        write_text_atomic(tmp_path / "summary.md", "# run\n")
        write_png_atomic(tmp_path / "sr.png", np.zeros((2, 2, 3), np.uint8))
        description = ModelDescription("tasks.sr.model:srresnet", {"num_blocks": 1, "channels": 4}, "sr", {})
        save_model(tmp_path / "best", description.build(), description)
    finally:
        os.umask(previous)
    files = ["plain.txt", "config.json", "summary.md", "sr.png", "best/network.json", "best/network.safetensors"]
    modes = {name: oct((tmp_path / name).stat().st_mode & 0o777) for name in files}
    assert modes == {name: oct(mode) for name in files}
    assert not [p.name for p in tmp_path.rglob(".*")]  # no temporary file left


# -- pickles and dependencies ---------------------------------------------------------------------------
class _RunsCode:
    """A pickle that calls a function when unpickled (here a harmless mkdir: its folder shows it ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _toy_run(tmp_path: Path, name: str = "run") -> Path:
    make_toy_trainer(tmp_path / name, max_steps=10).fit()
    return tmp_path / name / "checkpoints" / "last"


@pytest.mark.parametrize("file", ["optimizer.bin", "random_states_0.pkl"])
def test_a_pickle_that_would_run_code_is_a_damaged_file(tmp_path, file):
    last = _toy_run(tmp_path)
    marker = tmp_path / "code-ran"
    torch.save({"state": _RunsCode(marker)}, last / file)
    with pytest.raises(ValueError) as error:
        make_toy_trainer(tmp_path / "run", max_steps=12, resume=True).fit()
    assert str(error.value) == (f"--resume: {last / file} is damaged (it holds an object other than tensors and plain "
                                "data (posix.mkdir), which is not loaded: unpickling it could run code), so "
                                f"{last} cannot be resumed; give --resume another checkpoint of the run (e.g. "
                                "checkpoints/best) or a good copy")
    assert not marker.exists()


def test_a_pickle_that_would_run_code_stops_an_sr_resume_in_one_line(tmp_path, write_sr_crops, capsys):
    from tasks.sr import train as sr_train

    train = write_sr_crops(tmp_path / "train", embedded_sr_images("train"), 40, 4)
    bench = write_sr_crops(tmp_path / "bench", embedded_sr_images("test"), 36, 2)
    argv = [*SR_TINY, "--train-dir", str(train), "--sets", str(bench), "--output-dir", str(tmp_path), "--run-name",
            "run", "--wandb", "disabled", "--num-pictures", "0", "--eval-every", "2"]
    sr_train.main([*argv, "--max-steps", "2"])
    optimizer = tmp_path / "run" / "checkpoints" / "last" / "optimizer.bin"
    torch.save({"state": _RunsCode(tmp_path / "code-ran")}, optimizer)
    capsys.readouterr()
    line = error_line(cli_error(capsys, sr_train.main, [*argv, "--max-steps", "3", "--resume"]))
    assert line.startswith(f"error: --resume: {optimizer} is damaged (it holds an object other than tensors")
    assert not (tmp_path / "code-ran").exists()


@pytest.mark.parametrize("damage", ["other content", "missing"])
def test_an_unreadable_random_state_file_stops_the_resume(tmp_path, damage):
    """Accelerate skips a random-number file it cannot use without a word; the run would then no
    longer repeat the uninterrupted one."""
    last = _toy_run(tmp_path)
    rng_file = last / "random_states_0.pkl"
    if damage == "missing":
        rng_file.unlink()
        problem = "it is missing, and without it the resumed run would draw other random numbers"
    else:
        torch.save({"step": 10}, rng_file)  # loads, but holds no random states
        problem = "not Accelerate's random-number state (no random_state, numpy_random_seed, torch_manual_seed)"
    with pytest.raises(ValueError) as error:
        make_toy_trainer(tmp_path / "run", max_steps=12, resume=True).fit()
    assert str(error.value).startswith(f"--resume: {rng_file} is damaged ({problem}), so {last} cannot be resumed")


def test_resume_under_a_path_that_is_not_utf8_says_so(tmp_path):
    last = _toy_run(tmp_path, NOT_UTF8)  # training and saving work there
    assert (last / "model.safetensors").is_file()
    with pytest.raises(ValueError) as error:
        make_toy_trainer(tmp_path / NOT_UTF8, max_steps=12, resume=True).fit()
    assert str(error.value) == (f"--resume: {last} cannot be resumed: its path is not valid UTF-8, and the "
                                "safetensors library Accelerate loads checkpoints with opens only UTF-8 paths; "
                                "rename the folder (or the one above it that has the name) and resume from there")


def test_dependency_floors_load_with_weights_only():
    """torch 2.6 made weights_only=True torch.load's default; Accelerate 1.1 loads every file of
    load_state with it (1.0 called plain torch.load, which unpickles anything on torch < 2.6)."""
    text = (REPO / "pyproject.toml").read_text()
    floors = {name: tuple(int(part) for part in re.search(rf'"{name}>=([\d.]+)"', text).group(1).split("."))
              for name in ("torch", "accelerate")}
    assert floors["torch"] >= (2, 6) and floors["accelerate"] >= (1, 1)


def test_docs_load_downloaded_checkpoints_with_weights_only():
    text = (REPO / "docs" / "released-checkpoints.md").read_text()
    calls = re.findall(r"torch\.load\(([^()]*(?:\([^()]*\)[^()]*)*)\)", text)
    assert calls and all("weights_only=True" in call for call in calls), calls


def test_a_run_name_too_long_for_a_folder_is_refused_in_one_line(tmp_path, capsys):
    from tasks.classify.train import main as classify

    argv = ["--run-name", "r" * 300, "--output-dir", str(tmp_path), "--max-steps", "1", "--attention", "none",
            "--wandb", "disabled"]
    line = error_line(cli_error(capsys, classify, argv))
    assert line == "error: --run-name is 300 bytes long; a run folder name may have at most 241 (file names stop " \
                   "at 255 bytes)"
    assert list(tmp_path.iterdir()) == []
