"""Classification training: recipes in steps, top-k error, a real 3-step run, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
import torch

from conftest import classify_run_args
from tasks.classify import recipes, train
from tasks.common.run import per_process_batch, steps_per_epoch
from tasks.data.sampling import SeededDataset


# ------------------------------------------------------------------------------------------ recipes
@pytest.mark.parametrize(
    "arch, dataset, name, epochs, batch, milestones, gamma, wd, dropout",
    [
        ("resnet50", "cifar100", "cifar-resnet", 164, 128, (81, 122), 0.1, 1e-4, 0.0),
        ("preresnet110", "cifar100", "cifar-resnet", 164, 128, (81, 122), 0.1, 1e-4, 0.0),
        ("wrn28_8", "cifar100", "cifar-wrn", 200, 128, (60, 120, 160), 0.2, 5e-4, 0.3),
        ("resnext29_16x64d", "cifar100", "cifar-resnext", 300, 128, (150, 225), 0.1, 5e-4, 0.0),
        ("densenet100_bc", "cifar100", "cifar-densenet", 300, 64, (150, 225), 0.1, 1e-4, 0.0),
        ("resnet50", "imagenet", "imagenet", 90, 256, (30, 60), 0.1, 1e-4, 0.0),
    ],
)
def test_recipe_for_matches_reference_facts(arch, dataset, name, epochs, batch, milestones, gamma, wd, dropout):
    recipe = recipes.recipe_for(arch, dataset)
    assert (recipe.name, recipe.epochs, recipe.batch_size, recipe.milestones, recipe.gamma) == (
        name, epochs, batch, milestones, gamma)
    assert (recipe.lr, recipe.momentum, recipe.weight_decay, recipe.dropout) == (0.1, 0.9, wd, dropout)


def test_unknown_recipe_lists_valid_ones():
    with pytest.raises(ValueError, match="cifar-resnet.*imagenet"):
        recipes.get_recipe("cifar-vgg")


def test_epoch_schedule_in_steps_equals_epoch_stepped_multisteplr():
    """Stepping our scheduler every optimizer step gives the lr an epoch-stepped MultiStepLR gives."""
    recipe = recipes.get_recipe("cifar-resnet")
    # The global batch of the recipe is split over processes, so an epoch has as many steps on 4 GPUs.
    assert per_process_batch(recipe.batch_size, 4) == 32
    epoch_steps = steps_per_epoch(50_000, recipe.batch_size)
    assert epoch_steps == 390  # 50,000 // 128, last partial batch dropped
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ours = recipes.build_scheduler(optimizer, recipe, epoch_steps)
    reference_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    reference = torch.optim.lr_scheduler.MultiStepLR(reference_opt, milestones=[81, 122], gamma=0.1)
    factor = ours.lr_lambdas[0]
    for epoch in range(164):
        expected = reference_opt.param_groups[0]["lr"]
        for step in (epoch * 390, epoch * 390 + 389):
            assert 0.1 * factor(step) == pytest.approx(expected, rel=1e-12), (epoch, step)
        reference_opt.step()
        reference.step()


def test_batch_must_split_over_processes():
    with pytest.raises(ValueError, match="divisible"):
        per_process_batch(128, 3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        steps_per_epoch(100, 128)


# ----------------------------------------------------------------------------------------- metrics
def test_topk_correct_against_sorting():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    hits = train.topk_correct(logits, labels)
    ranks = np.argsort(-logits.numpy(), axis=1)
    position = np.array([np.flatnonzero(ranks[i] == labels[i].item())[0] for i in range(64)])
    np.testing.assert_array_equal(hits[1].numpy(), position < 1)
    np.testing.assert_array_equal(hits[5].numpy(), position < 5)
    # Fewer than 5 classes: top-5 is every class, so always right.
    assert bool(train.topk_correct(logits[:, :3], labels.clamp(max=2))[5].all())


def test_seeded_samples_repeat_augmentation_per_sample_seed():
    from tasks.data.digits import Digits

    data = SeededDataset(Digits(train=True))
    first, label = data[(7, 1234)]
    torch.manual_seed(0)  # the global RNG does not matter...
    again, _ = data[(7, 1234)]
    assert torch.equal(first, again) and label == data[7][1]
    before = torch.random.get_rng_state()
    others = [data[(7, seed)][0] for seed in range(1, 9)]
    assert torch.equal(torch.random.get_rng_state(), before)  # ...and is left untouched
    assert any(not torch.equal(first, other) for other in others)  # other seeds, other crops


# --------------------------------------------------------------------------------------- 3 steps
def _digits_run(output_dir, name, steps, *extra):
    [summary] = train.main([
        "--dataset", "digits", "--arch", "preresnet110", "--attention", "bam", "--max-steps", str(steps),
        "--batch-size", "4", "--eval-batch-size", "16", "--max-images", "40", "--num-workers", "0",
        "--wandb", "disabled", "--output-dir", str(output_dir), "--run-name", name, "--log-every", "1",
        "--eval-every", "2", *extra,
    ])
    return summary


@pytest.fixture(scope="module")
def three_step_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("classify")
    return output_dir / "smoke", _digits_run(output_dir, "smoke", 3)


def test_three_step_digits_run_writes_summary(three_step_run):
    run_dir, summary = three_step_run
    written = json.loads((run_dir / "summary.json").read_text())
    assert written["steps"] == 3 and written["status"] == "completed"
    assert (written["task"], written["dataset"], written["arch"], written["attention"]) == (
        "classify", "digits", "preresnet110", "bam")
    assert written["primary_metric"] == "top1_err" and written["primary_mode"] == "min"
    final = written["final"]
    assert 0.0 <= final["top5_err"] <= final["top1_err"] <= 100.0
    assert final["num_images"] == 40  # each requested image once (3 batches, the last one partial)
    from tasks.common.per_sample import load_per_sample

    kept = load_per_sample(run_dir)  # per sample, in evaluation order, for paired comparisons
    assert kept["index"].tolist() == list(range(40)) and kept["top1"].dtype == bool
    assert 100 * (1 - kept["top1"].mean()) == pytest.approx(final["top1_err"])
    assert 100 * (1 - kept["top5"].mean()) == pytest.approx(final["top5_err"])
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 3]
    best = min(evals, key=lambda r: r["top1_err"])  # best = lowest top-1 error, first one on ties
    assert written["best"]["top1_err"] == best["top1_err"] and written["best_step"] == best["step"]
    # PreResNet110 + BAM: 1.73M parameters in the paper (100 classes); 10 classes here drop
    # 90 x 257 weights of the classifier.
    assert written["params"] == summary["params"]
    assert abs(written["params"] + 90 * 257 - 1_732_000) < 1_000
    # Paper: 0.246 GMACs for PreResNet110 + BAM on 32x32 inputs, counted on the v1 layout.
    assert written["macs_v1"] == pytest.approx(0.246e9, abs=0.001e9)
    assert written["macs"] >= written["macs_v1"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(r["samples_per_s"] / r["steps_per_s"] == pytest.approx(4) for r in train_rows)  # batch 4
    assert [r["lr"] for r in train_rows] == [recipes.get_recipe("digits-quick").lr] * 3  # no milestone yet
    assert (run_dir / "summary.md").is_file() and (run_dir / "checkpoints" / "last").is_dir()
    with Image.open(run_dir / "curves_classify_digits_preresnet110.png") as curves:  # top-1 error per step
        assert curves.width > 400 and curves.height > 300


def test_interrupted_and_resumed_run_matches_the_straight_run(three_step_run, tmp_path):
    """Same seed: 2 steps, then --resume to 3, gives bit-identical weights (init, data order and
    augmentation all follow the seed)."""
    from safetensors.torch import load_file

    straight_dir, straight = three_step_run
    _digits_run(tmp_path, "resumed", 2)
    resumed = _digits_run(tmp_path, "resumed", 3, "--resume")
    assert resumed["steps"] == 3
    a = load_file(straight_dir / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final"] == straight["final"]


# ------------------------------------------------------------------------------------- bad input
def test_unknown_arch_lists_valid_names(capsys):
    with pytest.raises(SystemExit) as info:
        train.main(["--dataset", "cifar100", "--arch", "resnet9000"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'resnet9000'" in err and "preresnet110" in err and "wrn28_8" in err
    assert "Traceback" not in err


def test_unknown_attention_lists_valid_names(capsys):
    with pytest.raises(SystemExit):
        train.main(["--attention", "transformer"])
    err = capsys.readouterr().err
    assert "unknown attention 'transformer'" in err and "bam-c" in err and "se" in err


def test_bam_options_rejected_for_other_attentions(capsys):
    with pytest.raises(ValueError, match="--dilation.*se"):
        classify_run_args(["--attention", "se", "--dilation", "2"])
    with pytest.raises(SystemExit):  # before any data is read or any run trains
        train.main(["--attention", "bam", "se", "--dilation", "2", "--wandb", "disabled"])
    assert "--dilation do(es) not apply to --attention se" in capsys.readouterr().err


def test_missing_cifar_is_a_clean_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--dataset", "cifar100", "--arch", "resnet50", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert str(tmp_path / "cifar100") in err and "--download" in err


# ------------------------------------------------------------------------------ extra-block model
def test_extra_block_copies_the_stage_block_with_fresh_weights():
    args = classify_run_args(["--arch", "preresnet110", "--attention", "extra-block"])
    model = train.network_from_config(**train.model_config(args, 10))
    base_args = classify_run_args(["--arch", "preresnet110", "--attention", "none"])
    base = train.network_from_config(**train.model_config(base_args, 10))
    for stage in ("layer1", "layer2"):
        grown, original = model.get_submodule(stage), base.get_submodule(stage)
        assert len(grown) == len(original) + 1
        new, last = grown[-1], grown[-2]
        assert type(new) is type(last)
        for (name, p_new), (_, p_last) in zip(new.named_parameters(), last.named_parameters()):
            assert p_new.shape == p_last.shape, name
        conv_new = next(p for n, p in new.named_parameters() if p.dim() == 4)
        conv_last = next(p for n, p in last.named_parameters() if p.dim() == 4)
        assert not torch.equal(conv_new, conv_last)  # its own initialisation, not a weight copy
    assert len(model.get_submodule("layer3")) == len(base.get_submodule("layer3"))  # no block after the last stage
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
