"""tasks.data.sr / tasks.data.embedded: training crops, pairs, benchmark layouts, preparation
(and its command line, datasets/prepare_sr.py)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tasks.data.embedded import EMBEDDED_SPLITS, embedded_sr_files
from conftest import embedded_sr_images
from tasks.data.images import read_image
from tasks.data.imresize import bicubic_degrade
from tasks.data.sampling import EpochSeededSampler
from tasks.data.sr import (SRBenchmark, SRTrainFolder, find_benchmark, list_benchmarks,
                           prepare_subimages)
from tasks.utils.files import write_png_atomic

RNG = np.random.default_rng(0)
PREPARE_SR = Path(__file__).resolve().parents[1] / "datasets" / "prepare_sr.py"


def _save(path, shape, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)
    return pixels


@pytest.fixture()
def train_dir(tmp_path):
    _save(tmp_path / "train" / "a.png", (40, 50, 3))
    _save(tmp_path / "train" / "sub" / "b.png", (36, 33), mode="L")
    _save(tmp_path / "train" / "sub" / "c.jpg", (45, 38, 3))
    return tmp_path / "train"


# -- training folder -------------------------------------------------------------------------------

def test_train_items_shapes_ranges_and_lr_from_hr(train_dir):
    data = SRTrainFolder(train_dir, scale=4, patch_size=32)
    assert len(data) == 3 and [f.name for f in data.files] == ["a.png", "b.png", "c.jpg"]
    for index in range(3):
        item = data[(index, 123)]
        assert item["hr"].shape == (3, 32, 32) and item["lr"].shape == (3, 8, 8)
        assert item["hr"].dtype == torch.float32 and 0 <= item["hr"].min() and item["hr"].max() <= 1
        hr_uint8 = (item["hr"] * 255).round().to(torch.uint8)
        torch.testing.assert_close(item["lr"], bicubic_degrade(hr_uint8, 4).float() / 255)
    assert data[0]["hr"].shape == (3, 32, 32)  # plain int keys work too (global generator)


def test_keys_make_sampling_reproducible(train_dir):
    data = SRTrainFolder(train_dir, scale=2, patch_size=16)
    cached = SRTrainFolder(train_dir, scale=2, patch_size=16, cache=True)
    sampler = EpochSeededSampler(len(data), seed=7)
    sampler.set_epoch(3)
    keys = list(sampler)
    first = [data[k]["hr"] for k in keys]
    for key, hr in zip(keys, first):
        assert torch.equal(data[key]["hr"], hr) and torch.equal(cached[key]["hr"], hr)
    other = [data[(k[0], k[1] + 1)]["hr"] for k in keys]
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # the same batches whatever the number of workers (resume/worker independence)
    batches = [torch.cat([b["hr"] for b in DataLoader(data, batch_size=2, sampler=sampler, num_workers=w)])
               for w in (0, 2)]
    assert torch.equal(batches[0], batches[1])


def test_augmentations_are_the_eight_symmetries(tmp_path):
    pixels = _save(tmp_path / "one.png", (16, 16, 3))
    data = SRTrainFolder(tmp_path, scale=2, patch_size=16, augment=True)  # crop = whole image
    variants = []
    for k in range(4):
        rotated = np.rot90(pixels, k)
        variants += [rotated, rotated[:, ::-1]]
    seen = set()
    for seed in range(64):
        hr = (data[(0, seed)]["hr"] * 255).round().byte().permute(1, 2, 0).numpy()
        matches = [i for i, v in enumerate(variants) if np.array_equal(hr, v)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))
    plain = SRTrainFolder(tmp_path, scale=2, patch_size=16, augment=False)
    assert np.array_equal((plain[(0, 5)]["hr"] * 255).round().byte().permute(1, 2, 0).numpy(), pixels)


def test_benchmark_errors(tmp_path):
    (tmp_path / "sr" / "Set5").mkdir(parents=True)
    (tmp_path / "sr" / "Set5" / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="Urban100"):
        SRBenchmark("Urban100", 4, data_root=tmp_path)
    with pytest.raises(ValueError, match="Set5"):
        SRBenchmark("Set5", 4, data_root=tmp_path)


def test_real_benchmarks(sr_data_root):
    assert list_benchmarks(sr_data_root)[:2] == ["Set5", "Set14"]
    name, files = find_benchmark("set14", 4, sr_data_root)
    assert name == "Set14" and len(files) == 14
    set5 = SRBenchmark("Set5", 4, data_root=sr_data_root)
    sizes = {item["name"]: tuple(item["hr"].shape[1:]) for item in set5}
    assert sizes["woman"] == (344, 228) and sizes["bird"] == (288, 288)
    assert set5[0]["lr"].shape[1:] == (128, 128)  # baby: 512 / 4


# -- preparation -----------------------------------------------------------------------------------

def test_prepare_subimages(tmp_path):
    pixels = _save(tmp_path / "src" / "deep" / "big.png", (70, 100, 3))
    _save(tmp_path / "src" / "small.png", (30, 20, 3))
    count = prepare_subimages(tmp_path / "src", tmp_path / "dst", size=48, step=24)
    # rows: 0, 22 (last one flush with the border); columns: 0, 24, 48, 52 -> 8 tiles; small kept whole
    assert count == 9
    tiles = sorted((tmp_path / "dst" / "deep").glob("*.png"))
    assert [t.name for t in tiles][:2] == ["big_s001.png", "big_s002.png"] and len(tiles) == 8
    np.testing.assert_array_equal(np.asarray(Image.open(tiles[5])), pixels[22:70, 24:72])
    assert np.asarray(Image.open(tmp_path / "dst" / "small_s001.png")).shape == (30, 20, 3)
    assert prepare_subimages(tmp_path / "src", tmp_path / "dst", size=48, step=24) == 0  # resumable
    assert not list((tmp_path / "dst").rglob(".*"))  # no temporary file left behind
    _save(tmp_path / "src" / "small.jpg", (30, 20, 3))  # same stem as small.png: same tile names
    with pytest.raises(ValueError, match=r"small\.(png|jpg) and .*small\.(png|jpg) would write"):
        prepare_subimages(tmp_path / "src", tmp_path / "dst4", size=48, step=24)



def _prepare_sr(*args, cwd, env=None) -> subprocess.CompletedProcess:
    """Run datasets/prepare_sr.py as a user would: a script, from a folder outside the checkout."""
    command = [sys.executable, str(PREPARE_SR), *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_prepare_sr_script_prepares(tmp_path):
    _save(tmp_path / "src" / "big.png", (100, 64, 3))
    _save(tmp_path / "src" / "small.png", (30, 20, 3))
    done = _prepare_sr("prepare", tmp_path / "src", tmp_path / "dst", "--size", "64", "--step", "64",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 3 sub-images" in done.stdout  # rows 0 and 36 of big, small kept whole
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["big_s001.png", "big_s002.png",
                                                                     "small_s001.png"]
    missing = _prepare_sr("prepare", tmp_path / "nothing", tmp_path / "dst2", cwd=tmp_path)
    assert missing.returncode == 2 and "nothing" in missing.stderr and "Traceback" not in missing.stderr


def test_prepare_sr_script_lists_sets_under_the_data_root(tmp_path):
    for name in ("a", "b"):
        _save(tmp_path / "root" / "sr" / "Set5" / f"{name}.png", (8, 8, 3))
    _save(tmp_path / "root" / "sr" / "train" / "T91" / "t1.png", (8, 8, 3))  # training, not a benchmark
    env = {**os.environ, "BAM_DATA_ROOT": str(tmp_path / "root")}
    listed = _prepare_sr("list", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and listed.stdout == "Set5: 2 images\n", listed.stderr
    (tmp_path / "empty").mkdir()
    empty = _prepare_sr("list", "--data-root", tmp_path / "empty", cwd=tmp_path, env=env)  # flag wins
    assert empty.returncode == 0 and not empty.stdout and "no benchmark sets" in empty.stderr


# -- embedded photographs --------------------------------------------------------------------------

def test_embedded_images_are_bundled_and_split():
    train, test = embedded_sr_files("train"), embedded_sr_files("test")
    assert len(train) == len(EMBEDDED_SPLITS["train"]) and not set(train) & set(test)
    assert all(f.is_file() and "skimage" in str(f) for f in train + test)
    images = embedded_sr_images("test")
    assert [im.shape for im in images] == [(300, 451, 3), (400, 600, 3), (512, 512, 3)]
    assert read_image(embedded_sr_files("test")[2]).ndim == 2  # camera.png is gray
    with pytest.raises(ValueError, match="valid"):
        embedded_sr_images("valid")


def test_embedded_sets_train_and_benchmark(tmp_path):
    data = SRTrainFolder(embedded_sr_files("train"), scale=4, patch_size=48)
    assert data[(0, 1)]["lr"].shape == (3, 12, 12)
    bench = SRBenchmark("embedded", 4)
    assert [item["name"] for item in bench] == ["chelsea", "coffee", "camera"]
    assert bench[0]["hr"].shape == (3, 300, 448)
    written = [write_png_atomic(tmp_path / "emb" / f"{path.stem}.png", read_image(path))  # gray stays gray
               for path in embedded_sr_files("test")]
    gray = {item["name"]: item["gray"] for item in SRBenchmark(tmp_path / "emb", 4)}
    assert gray == {"camera": True, "chelsea": False, "coffee": False}
    assert len(written) == 3
