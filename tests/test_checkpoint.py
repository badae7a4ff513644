"""Atomic checkpoints: a kill at any point leaves a complete checkpoint to resume from."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tasks.common.checkpoint import (
    STATE_FILE,
    find_resume_checkpoint,
    link_checkpoint,
    read_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
)
from tasks.utils.files import write_json_atomic


@pytest.fixture()
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def prepared_model(accelerator, value: float):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    set_weights(model, value)
    return model


def set_weights(model, value: float) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(value)


def stored_weight(folder) -> float:
    return float(load_file(str(folder / "model.safetensors"))["weight"][0, 0])


def fake_checkpoint(folder, step: int, complete: bool = True) -> None:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights of step %d" % step)
    if complete:
        (folder / STATE_FILE).write_text(json.dumps({"step": step}))


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, accelerator, monkeypatch):
    model = prepared_model(accelerator, 1.0)
    last = tmp_path / "checkpoints" / "last"
    save_checkpoint(accelerator, last, {"step": 1})
    assert stored_weight(last) == 1.0 and read_trainer_state(last) == {"step": 1}

    set_weights(model, 2.0)
    real_save_state = accelerator.save_state

    def crash_midway(output_dir, **kwargs):
        real_save_state(output_dir, **kwargs)  # files written, then the process dies
        (tmp_path / "checkpoints" / "last.tmp" / "optimizer.bin").write_bytes(b"half")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(accelerator, "save_state", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, last, {"step": 2})
    monkeypatch.undo()

    assert (last.parent / "last.tmp").exists()  # the half-written one is there but incomplete
    assert resolve_checkpoint(last) == last
    assert stored_weight(last) == 1.0 and read_trainer_state(last) == {"step": 1}

    # The next save replaces the leftover and the previous checkpoint in one swap.
    save_checkpoint(accelerator, last, {"step": 3})
    assert stored_weight(last) == 2.0 and read_trainer_state(last) == {"step": 3}
    assert sorted(p.name for p in last.parent.iterdir()) == ["last"]


def test_extra_files_are_part_of_the_checkpoint(tmp_path, accelerator):
    prepared_model(accelerator, 0.5)
    last = tmp_path / "last"

    def broken_extra(folder):
        (folder / "model.pt").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        save_checkpoint(accelerator, last, {"step": 1}, extra=broken_extra)
    assert resolve_checkpoint(last) is None  # never marked complete
    save_checkpoint(accelerator, last, {"step": 1}, extra=lambda folder: (folder / "model.pt").write_text("ok"))
    assert (last / "model.pt").read_text() == "ok"


@pytest.mark.parametrize("present, expected_step", [
    (("last.old", "last.tmp"), 2),          # killed between the two renames: the new one wins
    (("last.old",), 1),                     # killed after moving the old one away, new one lost
    (("last", "last.tmp-incomplete"), 1),   # killed while writing: ignore the incomplete one
])
def test_resolve_recovers_from_a_kill_at_any_point(tmp_path, present, expected_step):
    steps = {"last.old": 1, "last": 1, "last.tmp": 2}
    for name in present:
        complete = not name.endswith("-incomplete")
        name = name.removesuffix("-incomplete")
        fake_checkpoint(tmp_path / name, steps[name], complete)
    found = resolve_checkpoint(tmp_path / "last")
    assert found == tmp_path / "last"
    assert read_trainer_state(found)["step"] == expected_step


def test_find_resume_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert find_resume_checkpoint(run, False) is None
    assert find_resume_checkpoint(run, True) is None  # nothing yet: start fresh
    fake_checkpoint(run / "checkpoints" / "last", 7)
    assert find_resume_checkpoint(run, True) == run / "checkpoints" / "last"
    assert find_resume_checkpoint(run, str(run)) == run / "checkpoints" / "last"
    fake_checkpoint(run / "checkpoints" / "best", 5)
    assert find_resume_checkpoint(run, run / "checkpoints" / "best") == run / "checkpoints" / "best"
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nowhere"):
        find_resume_checkpoint(run, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        find_resume_checkpoint(run, tmp_path / "empty")
    # A run folder whose last checkpoint is missing is an error too, and is never renamed.
    fake_checkpoint(tmp_path / "run2.tmp", 1)
    (tmp_path / "run2" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="run2/checkpoints/last is not a complete checkpoint"):
        find_resume_checkpoint(run, tmp_path / "run2")
    assert (tmp_path / "run2" / "checkpoints").is_dir() and resolve_checkpoint(tmp_path / "run2") is None


def test_link_checkpoint_survives_replacement_of_its_source(tmp_path):
    fake_checkpoint(tmp_path / "last", 4)
    link_checkpoint(tmp_path / "last", tmp_path / "best")
    assert read_trainer_state(tmp_path / "best")["step"] == 4
    same_file = os.stat(tmp_path / "last" / "model.safetensors").st_ino == os.stat(tmp_path / "best" / "model.safetensors").st_ino
    assert same_file  # hard links: no second copy of the weights on disk
    # `last` is later replaced (renamed away and deleted): `best` keeps its files.
    fake_checkpoint(tmp_path / "last.tmp", 6)
    os.replace(tmp_path / "last", tmp_path / "gone")
    os.replace(tmp_path / "last.tmp", tmp_path / "last")
    import shutil

    shutil.rmtree(tmp_path / "gone")
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == b"weights of step 4"


def test_write_json_atomic_and_bad_state_file(tmp_path):
    write_json_atomic(tmp_path / "a" / "state.json", {"value": torch.tensor(1.5), "path": tmp_path,
                                                      "per_class": torch.tensor([0.5, 0.25])})
    assert json.loads((tmp_path / "a" / "state.json").read_text()) == {"value": 1.5, "path": str(tmp_path),
                                                                      "per_class": [0.5, 0.25]}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["state.json"]  # no temporary file left
    (tmp_path / STATE_FILE).write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_trainer_state(tmp_path)


def _small_srresnet_description():
    from tasks.common.model_io import ModelDescription

    return ModelDescription("tasks.sr.model:srresnet", {"num_blocks": 1, "channels": 8, "attention": "bam",
                                                        "attention_interval": 1}, "sr", {"protocol": "basicsr"})


def test_model_file_round_trip_and_mismatch_names_the_file(tmp_path):
    from tasks.common.model_io import DESCRIPTION_FILE, WEIGHTS_FILE, load_model, save_model

    description = _small_srresnet_description()
    network = description.build()
    path = save_model(tmp_path / "ckpt", network, description)
    assert path == tmp_path / "ckpt" / DESCRIPTION_FILE and (tmp_path / "ckpt" / WEIGHTS_FILE).is_file()
    record = json.loads(path.read_text())
    assert record == {"format": "bam-model/2", "task": "sr", "builder": "tasks.sr.model:srresnet",
                      "kwargs": description.kwargs, "extra": {"protocol": "basicsr"}}
    for where in (tmp_path / "ckpt", path, tmp_path / "ckpt" / WEIGHTS_FILE):
        loaded, found = load_model(where)
        assert found == description
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), network.state_dict().values()))
    with pytest.raises(ValueError, match=f"{path} holds a model made for the 'sr' task .*takes models of the "
                                         "'classify' task"):
        load_model(path, task="classify")

    path.write_text(json.dumps({**record, "kwargs": {**record["kwargs"], "channels": 4}}))
    with pytest.raises(ValueError, match=f"{path.with_name(WEIGHTS_FILE)}: the stored weights do not fit the "
                                         "network that tasks.sr.model:srresnet builds"):
        load_model(path)
    path.write_text(json.dumps({**record, "kwargs": {"scale": 3}}))
    with pytest.raises(ValueError, match=f"{path}: scale=3 is not supported"):
        load_model(path)


@pytest.mark.parametrize("builder, message", [
    ("subprocess:run", "is not one of this repository's model builders"),
    ("torch.nn:Linear", "is not one of this repository's model builders"),
    ("tasks.common.model_io:save_model", "is not marked as a model builder"),
    ("tasks.sr.nothing:here", "cannot import model builder"),
])
def test_model_files_name_only_our_builders(tmp_path, builder, message):
    from tasks.common.model_io import load_model, save_model

    path = save_model(tmp_path, _small_srresnet_description().build(), _small_srresnet_description())
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "builder": builder, "kwargs": {"args": ["touch", "pwned"]}}))
    with pytest.raises(ValueError, match=f"{path}: .*{message}"):
        load_model(path)
    assert not (tmp_path / "pwned").exists()


def test_broken_model_files_name_the_file_and_the_fault(tmp_path):
    from tasks.common.model_io import DESCRIPTION_FILE, WEIGHTS_FILE, load_model, save_model

    description = _small_srresnet_description()
    path = save_model(tmp_path, description.build(), description)
    weights = tmp_path / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file"):
        load_model(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=f"{weights} not found"):
        load_model(tmp_path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path} is not a readable model description"):
        load_model(tmp_path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="is not a bam-model/2 model description"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"no model file at {tmp_path / 'empty'}|model not found"):
        load_model(tmp_path / "empty")
    assert DESCRIPTION_FILE == "network.json"


def test_pickled_model_files_are_refused_unread(tmp_path):
    """A pickled ``model.pt`` (never written by a release) is not a model file: refused in one line,
    never unpickled (so a pickle that would run code runs nothing)."""
    from tasks.common.model_io import load_model

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    legacy = tmp_path / "checkpoints" / "best" / "model.pt"
    legacy.parent.mkdir(parents=True)
    torch.save({"format": "bam-model/1", "evil": Evil()}, legacy)
    with pytest.raises(ValueError, match=f"^{legacy} is not a model file: expected network.json"):
        load_model(legacy)
    with pytest.raises(FileNotFoundError, match=f"^no model file at {tmp_path}: expected network.json"):
        load_model(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_read_state_dict_takes_the_files_users_have(tmp_path):
    from safetensors.torch import save_file

    from tasks.common.model_io import read_state_dict

    weights = {"conv1.weight": torch.randn(2, 3, 1, 1), "fc.bias": torch.randn(2)}
    # DDP wrapping inside a training checkpoint dict
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "ddp.pth")
    # a whole model whose trunk sits under a prefix: the anchor key finds it
    save_file({f"backbone.body.{k}": v for k, v in weights.items()} | {"head.weight": torch.ones(1)},
              str(tmp_path / "whole.safetensors"))
    # a run folder of this repository: checkpoints/best/network.safetensors
    best = tmp_path / "run" / "checkpoints" / "best"
    best.mkdir(parents=True)
    save_file(weights, str(best / "network.safetensors"))
    for source in ("ddp.pth", "whole.safetensors", "run"):
        state = read_state_dict(tmp_path / source)
        assert state.keys() == weights.keys(), source
        assert all(torch.equal(state[k], weights[k]) for k in weights), source

    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth"):
        read_state_dict(tmp_path / "broken.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth"):
        read_state_dict(tmp_path / "list.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        read_state_dict(tmp_path / "empty")
