"""Class-selectivity index against values worked out by hand."""

import math

import pytest
import torch
from torch import nn

from tasks.analysis.selectivity import class_selectivity, plot_selectivity, stage_numbers, stage_selectivity


def test_index_on_a_hand_made_table():
    # images x units; classes 0, 0, 1, 2
    labels = torch.tensor([0, 0, 1, 2])
    activity = torch.tensor([
        # unit0: class means 3, 1, 1 -> (3 - 1) / (3 + 1) = 0.5
        # unit1: same for every class -> 0
        # unit2: never fires -> undefined
        # unit3: only class 1 -> 1
        # unit4: class means 1, 4, 2 -> (4 - 1.5) / (4 + 1.5) = 5/11
        [2.0, 1.0, 0.0, 0.0, 0.5],
        [4.0, 1.0, 0.0, 0.0, 1.5],
        [1.0, 1.0, 0.0, 7.0, 4.0],
        [1.0, 1.0, 0.0, 0.0, 2.0],
    ])
    index = class_selectivity(activity, labels, num_classes=3)
    assert index[0].item() == pytest.approx(0.5)
    assert index[1].item() == pytest.approx(0.0)
    assert math.isnan(index[2].item())
    assert index[3].item() == pytest.approx(1.0)
    assert index[4].item() == pytest.approx(5 / 11)


def test_absent_classes_are_ignored_and_bad_input_is_named():
    labels = torch.tensor([0, 3])  # classes 1 and 2 have no images: they must not count as zeros
    index = class_selectivity(torch.tensor([[1.0], [3.0]]), labels, num_classes=4)
    assert index.item() == pytest.approx((3 - 1) / (3 + 1))
    with pytest.raises(ValueError, match="non-negative"):
        class_selectivity(torch.tensor([[-1.0], [1.0]]), labels, num_classes=4)
    with pytest.raises(ValueError, match="two classes"):
        class_selectivity(torch.ones(2, 1), torch.tensor([1, 1]), num_classes=4)


def test_stage_selectivity_on_a_network_and_plots(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2), nn.ReLU())
    images = torch.rand(12, 3, 9, 9)
    labels = torch.arange(12) % 3
    loader = [(images[:6], labels[:6]), (images[6:], labels[6:])]
    result = stage_selectivity(model, loader, ["1", "3"], num_classes=3)
    # the direct computation on the same features
    features = model[:2](images).mean(dim=(2, 3))
    expected = class_selectivity(features, labels, 3)
    torch.testing.assert_close(result["1"], expected, equal_nan=True)
    assert result["3"].shape == (6,)
    files = plot_selectivity({"baseline": result, "BAM": result}, tmp_path, title="toy")
    assert [f.name for f in files] == ["selectivity_stage1.png", "selectivity_stage2.png"]
    assert all(f.read_bytes()[:4] == b"\x89PNG" for f in files)


def test_activity_is_rectified_before_the_spatial_mean():
    # A stage that does not end in a ReLU (pre-activation networks): Morcos et al. take post-ReLU
    # activity, mean(relu(F)); relu(mean(F)) would let negative pixels cancel positive ones.
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    images = torch.tensor([[2.0, -2.0], [1.0, 1.0]]).reshape(2, 1, 1, 2)  # class 0 mean 0, relu-mean 1
    labels = torch.tensor([0, 1])
    result = stage_selectivity(nn.Sequential(conv), [(images, labels)], ["0"], num_classes=2)
    # relu-mean activity: class 0 -> 1, class 1 -> 1: a unit that fires the same for both classes
    assert result["0"].item() == pytest.approx(0.0)


def test_stage_numbers_of_a_silent_stage_and_bad_labels():
    assert stage_numbers(torch.tensor([float("nan")] * 3)) == {"mean": None, "median": None, "units": 0,
                                                               "silent_units": 3}
    assert stage_numbers(torch.tensor([0.2, float("nan"), 0.4])) == {
        "mean": pytest.approx(0.3), "median": pytest.approx(0.2), "units": 2, "silent_units": 1}
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        class_selectivity(torch.ones(2, 1), torch.tensor([0, 3]), num_classes=3)
    with pytest.raises(ValueError, match="empty"):
        stage_selectivity(nn.Sequential(nn.ReLU()), [], ["0"], num_classes=3)


def test_max_images_spread_over_a_set_sorted_by_class(capsys):
    from tasks.analysis.selectivity import main, spread_indices

    labels = [i // 50 for i in range(1000)]  # 20 classes of 50 images, one after another (ImageNet's order)
    picked = spread_indices(len(labels), 100)
    assert len(set(picked)) == 100 and {labels[i] for i in picked} == set(range(20))
    assert spread_indices(5, 10) == [0, 1, 2, 3, 4]
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint", "unused", "--max-images", "0"])
    assert stop.value.code == 2 and "--max-images: expected a positive integer, got 0" in capsys.readouterr().err
