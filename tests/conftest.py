"""What several test modules share: data writers (as fixtures), the toy trainer, the SR and
scene-parsing command-line settings of tiny runs, command-error readers and a W&B record reader.
A test module keeps only its own tests and helpers."""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

# Tests never talk to W&B servers and never use more threads than CI has cores.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


# -- process-wide state ---------------------------------------------------------------------------------
def reset_accelerate_state() -> None:
    """Forget Accelerate's process-wide singletons, so that the next Accelerator starts afresh."""
    if "accelerate.state" not in sys.modules:  # nothing made one yet: nothing to forget
        return
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test gets its own Accelerator: an earlier test's would answer for this one otherwise."""
    yield
    reset_accelerate_state()


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


# -- super-resolution: tiny runs on crops of real photographs ----------------------------------------------
# SRResNet with 2 blocks of 8 channels, 24x24 HR patches, batches of 2, no workers.
SR_TINY = ["--preset", "quick", "--attention", "bam", "--no-global-residual", "--num-blocks", "2", "--channels", "8",
           "--attention-interval", "1", "--patch-size", "24", "--batch-size", "2", "--repeat", "1",
           "--num-workers", "0", "--seed", "3", "--log-every", "1"]


@pytest.fixture(scope="session")
def write_sr_crops():
    """``write_sr_crops(folder, images, size, count)``: ``count`` square crops of ``size`` pixels
    from the HxWx3 arrays ``images`` (in turn, at spread positions), as PNG files; returns folder."""
    def write(folder: Path, images, size: int, count: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = images[i % len(images)]
            top, left = (37 * i) % (image.shape[0] - size), (53 * i) % (image.shape[1] - size)
            Image.fromarray(image[top:top + size, left:left + size]).save(folder / f"crop{i}.png")
        return folder
    return write


def classify_run_args(argv: list[str]):
    """The resolved options of a ``python -m tasks.classify`` command line with one ``--attention``."""
    from tasks.classify import train

    args = train.TASK.parse_args(argv)
    (args.attention,) = args.attention
    return train.resolve_args(args)


def embedded_sr_images(split: str = "train") -> list[np.ndarray]:
    """scikit-image's bundled photographs of a split (tasks.data.embedded) as uint8 (H, W, 3)."""
    from tasks.data.embedded import embedded_sr_files
    from tasks.data.images import read_rgb

    return [read_rgb(path) for path in embedded_sr_files(split)]


@pytest.fixture(scope="module")
def sr_crops(tmp_path_factory, write_sr_crops) -> dict[str, Path]:
    """A training folder (6 crops of 40 px) and a benchmark folder (3 crops of 36 px: an odd count,
    36 = 9 * 4) cut from scikit-image's bundled photographs."""
    base = tmp_path_factory.mktemp("sr-crops")
    return {"train": write_sr_crops(base / "train", embedded_sr_images("train"), 40, 6),
            "bench": write_sr_crops(base / "bench", embedded_sr_images("test"), 36, 3)}


# -- scene parsing: a tiny ADE20K ------------------------------------------------------------------------
# A ResNet-18 encoder with a 16-channel decoder on images of 64 px (short side), batches of 2.
PARSE_TINY = ["--batch-size", "2", "--backbone", "resnet18", "--decoder-channels", "16", "--short-sides", "64",
              "--max-long-side", "96", "--num-workers", "0", "--wandb", "disabled", "--macs-size", "64",
              "--log-every", "1", "--num-pictures", "2"]
# Raw ADE values (0 = unlabeled) of the tiny ADE20K's labels, and the colours its images show there.
ADE_COLOURS = {0: (0, 0, 0), 1: (230, 30, 30), 5: (30, 230, 30), 150: (30, 30, 230)}


def tiny_ade_label(height: int, width: int, seed: int) -> np.ndarray:
    """Blocks of raw values 1, 5, 150 and an unlabeled strip, placed asymmetrically."""
    label = np.full((height, width), 1, np.uint8)
    cut = width // 3 + seed % 5
    label[:, cut:] = 5
    label[height // 2:, : width // 4] = 150
    label[: height // 8] = 0
    return label


@pytest.fixture(scope="session")
def write_tiny_ade20k():
    """``write_tiny_ade20k(root, sizes=((64, 80), (80, 64), (64, 80)), splits=("training", "validation"))``:
    one JPEG image and mode-L label PNG per (height, width) and split, in the released
    ADEChallengeData2016 layout under ``root``; returns root."""
    def write(root: Path, sizes=((64, 80), (80, 64), (64, 80)), splits=("training", "validation")) -> Path:
        for split in splits:
            images = root / "ADEChallengeData2016" / "images" / split
            labels = root / "ADEChallengeData2016" / "annotations" / split
            images.mkdir(parents=True, exist_ok=True)
            labels.mkdir(parents=True, exist_ok=True)
            for i, (h, w) in enumerate(sizes):
                label = tiny_ade_label(h, w, i)
                rgb = np.zeros((h, w, 3), np.uint8)
                for value, colour in ADE_COLOURS.items():
                    rgb[label == value] = colour
                name = f"ADE_{split[:5]}_{i:08d}"
                Image.fromarray(rgb).save(images / f"{name}.jpg", quality=95)
                Image.fromarray(label).save(labels / f"{name}.png")
        return root
    return write


# -- detection: a tiny COCO --------------------------------------------------------------------------------
# Category ids with gaps, as in COCO (1..90 with holes): labels must stay the ids.
COCO_CATEGORIES = [{"id": 1, "name": "cat", "supercategory": "animal"},
                   {"id": 3, "name": "dog", "supercategory": "animal"},
                   {"id": 7, "name": "car", "supercategory": "vehicle"}]
# (file, width, height, [(category, x, y, w, h, iscrowd)]); sizes cover COCO's small (< 32^2),
# medium and large (> 96^2) area ranges.
COCO_CLEAN_IMAGES = [
    ("000000000001.jpg", 160, 120, [(1, 10, 10, 20, 20, 0), (3, 50, 30, 60, 50, 0)]),
    ("000000000002.jpg", 128, 128, [(7, 5, 5, 110, 100, 0), (1, 90, 100, 25, 20, 0)]),
    ("000000000003.jpg", 200, 150, [(3, 20, 20, 40, 40, 0), (7, 100, 40, 90, 100, 0),
                                    (1, 150, 10, 30, 25, 0)]),
]
COCO_BAD_IMAGES = [
    # one box reaching outside the image (clipped), one entirely outside (dropped), one crowd region
    ("000000000004.jpg", 96, 128, [(3, 60, 80, 50, 60, 0), (1, 120, 10, 20, 20, 0),
                                   (7, 0, 0, 40, 40, 1)]),
    ("000000000005.jpg", 64, 64, []),  # empty annotation list
]


@pytest.fixture(scope="session")
def write_tiny_coco():
    """``write_tiny_coco(root, split="val", images=COCO_CLEAN_IMAGES, seed=0)``: a COCO-format data
    set in the released layout under ``root/coco``, bright rectangles where the boxes are; returns root."""
    def write(root: Path, split: str = "val", images=None, seed: int = 0) -> Path:
        images = COCO_CLEAN_IMAGES if images is None else images
        rng = np.random.default_rng(seed)
        image_dir = root / "coco" / f"{split}2017"
        image_dir.mkdir(parents=True, exist_ok=True)
        (root / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
        records, annotations = [], []
        for image_id, (name, width, height, boxes) in enumerate(images, start=1):
            pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
            for _, x, y, w, h, _ in boxes:
                pixels[max(y, 0):y + h, max(x, 0):x + w] = rng.integers(150, 255, size=3, dtype=np.uint8)
            Image.fromarray(pixels).save(image_dir / name, quality=95)
            records.append({"id": image_id, "file_name": name, "width": width, "height": height})
            for category, x, y, w, h, crowd in boxes:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                    "bbox": [x, y, w, h], "area": float(w * h), "iscrowd": crowd})
        content = {"images": records, "annotations": annotations, "categories": COCO_CATEGORIES}
        (root / "coco" / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(content))
        return root
    return write


# -- the toy trainer: a small MLP regressing y = sum(x) ----------------------------------------------------
class NoisyLinearData(Dataset):
    """y = sum(x); the input gets augmentation noise drawn from the key's own seed."""

    def __init__(self, n: int = 37) -> None:
        generator = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, 4, generator=generator)
        self.y = self.x.sum(1, keepdim=True)
        self.drawn: list[float] = []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key):
        from tasks.data.sampling import key_generator

        # A plain index (no per-sample seed) draws from the global RNG, as most transforms do.
        index, generator = key_generator(key)
        noise = torch.randn(4, generator=generator)
        self.drawn.append(float(noise[0]))
        return self.x[index] + 0.05 * noise, self.y[index]


def mae_evaluate(data: Dataset):
    """An evaluate_fn scoring the mean absolute error on ``data``, gathered over processes."""
    from torch.utils.data import DataLoader

    from tasks.common.distributed import prepare_eval_loader

    def evaluate(model, accelerator, step):
        errors = []
        for x, y in prepare_eval_loader(accelerator, DataLoader(data, batch_size=4)):
            errors.append(accelerator.gather_for_metrics((model(x) - y).abs()))
        errors = torch.cat(errors)
        return {"mae": errors.mean().item(), "count": len(errors)}
    return evaluate


def make_toy_trainer(run_dir, *, max_steps=20, seed=0, resume=False, loss_hook=None, evaluate_fn=None,
                     eval_every=5, best_metric="mae", best_mode="min", dropout=0.3, batch_size=5,
                     global_rng_data=False, hidden=16, accelerator=None, **settings):
    """A Trainer of the shared loop on a small MLP and NoisyLinearData (37 items), AdamW with a
    step schedule; ``loss_hook(call)`` runs before each loss (tests stop or signal from there)."""
    from accelerate.utils import set_seed
    from torch import nn
    from torch.utils.data import DataLoader

    from tasks.common.tracking import Tracker
    from tasks.common.trainer import TrainConfig, Trainer, loss_step
    from tasks.data.sampling import EpochSeededSampler

    set_seed(seed)
    # Dropout makes the result depend on the training RNG, so an unrestored RNG would show.
    model = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
    data = NoisyLinearData()
    if global_rng_data:  # a plain shuffling loader: Accelerate seeds its order, the data uses global RNG
        loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    else:
        loader = DataLoader(data, batch_size=batch_size, sampler=EpochSeededSampler(len(data), seed))
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        if loss_hook is not None:
            loss_hook(calls["n"])
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        return loss, {"abs_mean": model(x).abs().mean().item()}

    description = settings.pop("description", None)
    tracker = Tracker(run_dir, {}, mode=settings.pop("wandb_mode", "disabled"), task="toy")
    train_config = TrainConfig(max_steps=max_steps, eval_every=eval_every, best_metric=best_metric,
                               best_mode=best_mode, seed=seed, resume=resume, log_every=3, task="toy", progress=False,
                               **settings)
    # The step calls whatever loss the test puts in trainer.loss_fn (some tests swap it).
    trainer = Trainer(model, optimizer, loader, loss_step(lambda m, b: trainer.loss_fn(m, b)), train_config, run_dir,
                      description=description, evaluate_fn=evaluate_fn or mae_evaluate(data),
                      scheduler=scheduler, accelerator=accelerator, tracker=tracker,
                      config={"arch": "mlp", "attention": "none", "dataset": "toy", "lr": 1e-2})
    trainer.loss_fn = loss_fn
    return trainer


def trainer_weights(trainer) -> dict[str, torch.Tensor]:
    """A copy of the trainer's model weights, as they are now."""
    return {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run folder's metrics.jsonl."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def free_port() -> int:
    """A local TCP port nobody listens on now (for `accelerate launch --main_process_port`)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- command-line errors -----------------------------------------------------------------------------------
def cli_error(capsys, main, argv) -> str:
    """The stderr of a command that must stop with exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


def error_line(stderr: str) -> str:
    """The one ``error: ...`` line, checked to be alone (no traceback around it)."""
    assert "Traceback" not in stderr and "Caught" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


# -- W&B offline runs --------------------------------------------------------------------------------------
def read_wandb_records(path: Path) -> list:
    """Parse a ``.wandb`` transaction log (W&B's LevelDB-style record format) into protobuf records.

    W&B's Python package no longer ships a reader, so this follows the format: a 7-byte header,
    then 32 KiB blocks of records, each with a 7-byte header (CRC, length, type FULL/FIRST/MIDDLE/LAST).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, position = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    records, pending = [], b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # block trailer padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if length == 0 and kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wait_for_records(path: Path, timeout: float = 20.0) -> list:
    """W&B's writer process may still be flushing right after ``finish``: wait for the exit record
    (the timeout only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def offline_wandb_records(folder: Path) -> list:
    """The records of the one offline W&B run recorded under ``folder/wandb``."""
    (log,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    return wait_for_records(log)


def wandb_run_record(records: list):
    """The run record (id, project, group, job type, tags, config) of a W&B run's records."""
    return next(r.run for r in records if r.WhichOneof("record_type") == "run")


def _wandb_items(items) -> dict:
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) if item.value_json else item.number
            for item in items}


def wandb_history(records: list) -> list[dict]:
    """The logged rows of a W&B run's records, one dict (``key: value``) per ``log`` call."""
    return [_wandb_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]


def wandb_summary(records: list) -> dict:
    """The final summary of a W&B run's records (``key: value``)."""
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update(_wandb_items(record.summary.update))
    return summary
