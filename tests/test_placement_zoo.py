"""Placement on the CNNs people use: timm's zoo and the usual ways of taking a backbone.

Every timm network's sites are checked against a reference built here, independently of
``bam.placement``, from timm's own split of each network into a stem and blocks
(``model.group_matcher()``, the grouping timm uses for layer-wise learning rates): blocks run
in order, and where a block's output has at most half the pixels of the last block output
finished before it started, the level of that last output ends. Its stage output is the map
entering the block when the block downsamples itself, else that last block output. Levels
before the first block output are the stem. A map's spatial dims are the pair with the input's
aspect ratio (the input is not square), so channels-last maps are read without help.
"""

import copy
import re

import pytest
import timm
import torch
import torchvision
from timm.utils import reparameterize_model
from torch import nn

from bam import BAM, attach_attention, attached_attention, attention_targets, capture_attention, find_bottlenecks

INPUT = (3, 64, 96)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Maps of a few pixels: a second thread gains nothing here, and on a busy two-core machine it
    # made this file several times slower (its threads wait for each other).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ the reference
def _spatial(tensor) -> tuple[int, int] | None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
        return None
    ratio = INPUT[1] / INPUT[2]
    for h, w in (tuple(tensor.shape[-2:]), tuple(tensor.shape[1:3])):
        if max(h, w) <= 2 or abs(h / w - ratio) <= 0.1 * ratio:  # a 1x2 map is too small to show it
            return h, w
    return None


def _maps(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.dim() == 4 else []
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _maps(item)]
    if isinstance(value, dict):
        return _maps(list(value.values()))
    return []


def _group(name: str, matcher: dict):
    """timm's group of a module name: (ordinal of the matching entry, *regex groups); 0 = stem."""
    for ordinal, spec in enumerate(matcher.values()):
        for pattern, suffix in (spec if isinstance(spec, (list, tuple)) else [(spec, None)]):
            match = re.match(pattern, name)
            if match:
                return (ordinal, *match.groups(), *(suffix or ()))
    return None


def block_names(model: nn.Module) -> list[str]:
    """The outermost module of each of timm's groups, stem excluded."""
    matcher = model.group_matcher(coarse=False)
    groups = {name: _group(name, matcher) for name, _ in model.named_modules()}
    return [name for name, group in groups.items()
            if group is not None and group[0] != 0 and group != groups.get(name.rpartition(".")[0])]


def reference_and_sites(model: nn.Module, sites: list[str], x: torch.Tensor):
    """(the reference's stage outputs as [(block, size)], the reference block each site's output
    is, or None), from one forward pass."""
    modules = dict(model.named_modules())
    calls, site_out, handles, clock = [], {}, [], [0]

    def pre(module, args, kwargs):
        clock[0] += 1
        calls.append({"module": module, "start": clock[0], "inputs": _maps((args, kwargs))})

    def post(name):
        def hook(module, args, output):
            clock[0] += 1
            call = next(c for c in reversed(calls) if c["module"] is module and "end" not in c)
            call.update(name=name, end=clock[0], output=(_maps(output) or [None])[0])
        return hook

    for path in sites:  # each site's output before and after its attention hook
        for prepend in (True, False):
            handles.append(modules[path].register_forward_hook(
                lambda m, i, o, path=path: site_out.setdefault(path, []).append(o), prepend=prepend))
    for name in block_names(model):
        handles.append(modules[name].register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(modules[name].register_forward_hook(post(name)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    found = {}
    for call in calls:
        done = [c for c in calls if c.get("end", float("inf")) < call["start"] and c["output"] is not None]
        if not done or call["output"] is None:
            continue
        last = max(done, key=lambda c: c["end"])
        a, b = _spatial(last["output"]), _spatial(call["output"])
        if a is None or b is None or b == (1, 1) or 2 * b[0] * b[1] > a[0] * a[1]:
            continue
        fed = [c for c in done if any(t is c["output"] for t in call["inputs"])]
        entering = max(fed, key=lambda c: c["end"])["output"] if fed else call["inputs"][0]
        stage_output = entering if _spatial(entering) == a else last["output"]
        found.setdefault(id(stage_output), (stage_output, call["name"]))
    reference = [(name, _spatial(t)) for t, name in found.values()]
    matched = [next((name for t, name in found.values() if any(t is o for o in site_out.get(path, []))), None)
               for path in sites]
    return reference, matched


# ------------------------------------------------------------------------------- the zoo
# name, and build arguments that make the network smaller where its family allows
ZOO = [
    # plain residual, inverted-residual and ConvNeXt-style networks, deep stems
    ("resnetblur18", {}), ("resnet10t", {}), ("efficientnet_blur_b0", {}), ("mobilenetv3_small_050", {}),
    ("convnext_atto", {}), ("regnetx_002", {}), ("hgnetv2_b0", {}), ("ese_vovnet19b_slim_dw", {}),
    ("dla46_c", {}), ("darknet17", {}),  # DarkNet: a full-resolution stem conv, its first stage strides
    # strides applied late inside a block
    ("resnest14d", {}), ("resnetaa34d", {"layers": (1, 1, 1, 1)}),
    ("seresnextaa101d_32x8d", {"layers": (1, 1, 1, 1)}), ("resnet50_clip_gap", {}), ("ghostnet_050", {}),
    ("ghostnetv2_100", {}), ("ghostnetv3_050", {}), ("repghostnet_050", {}), ("mixnet_s", {}),
    ("mobilenetv4_conv_blur_medium", {}), ("xception41", {}),
    # channels-last maps, list outputs (parallel training branches: test_reparameterized_network)
    ("mambaout_femto", {"depths": (1, 1, 1, 1)}), ("selecsls42b", {}),
]
# timm groups DLA's level0/level1 (plain convs before the first tree) as blocks; here they are stem.
ZOO_STEM_DIFFERS = {"dla46_c": 2}
# Sites where timm's grouping has none: SelecSLS's head (one group for timm) downsamples twice,
# and timm's feature_info lists head.1 at reduction 32 as a feature.
ZOO_EXTRA_SITES = {"selecsls42b": ["head.1"]}


def bam_grads(model: nn.Module) -> bool:
    return all(p.grad is not None for m in attached_attention(model).values() for p in m.parameters())


def check_network(name: str, **kwargs) -> nn.Module:
    """Attach BAM where placement puts it, check the sites against the reference, run forward in
    eval mode, then a training step, in which every BAM must get a gradient."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    sites = attach_attention(model, "bam", input_size=INPUT)
    x = torch.randn(2, *INPUT)
    reference, matched = reference_and_sites(model, sites, x)  # in eval mode
    extra = ZOO_EXTRA_SITES.get(name, [])
    reference = reference[ZOO_STEM_DIFFERS.get(name, 0):]
    assert [m for m, site in zip(matched, sites) if site not in extra] == [block for block, _ in reference], (
        f"{name}: sites {sites}, reference {reference}")
    assert all(m is None for m, site in zip(matched, sites) if site in extra), (name, sites, matched)
    model.train()
    model(x).float().square().mean().backward()
    modules = attached_attention(model)
    assert len(modules) == len(sites) and all(isinstance(m, BAM) for m in modules.values())
    no_grad = [key for key, module in modules.items() if any(p.grad is None for p in module.parameters())]
    assert not no_grad, f"{name}: no gradient in the BAM after {no_grad}"
    return model


@pytest.mark.parametrize("name,kwargs", ZOO, ids=[name for name, _ in ZOO])
def test_timm_network(name, kwargs):
    check_network(name, **kwargs)


@pytest.mark.parametrize("name", ["repvgg_a0", "mobileone_s0", "fastvit_t8"])
def test_reparameterized_network(name):
    # Trained with BAM in its training form, then fused for deployment (a copy: hooks and BAM
    # come along), it has the same sites as the deployed form built directly, so BAM weights load.
    trained = check_network(name)
    deployed = reparameterize_model(trained.eval())
    fresh = reparameterize_model(timm.create_model(name, pretrained=False).eval())
    assert attach_attention(fresh, "bam", input_size=INPUT) == list(attention_targets(trained))
    fresh.load_state_dict(deployed.state_dict())  # strict: the same BAM keys
    x = torch.randn(2, *INPUT)
    torch.testing.assert_close(fresh.eval()(x), deployed(x))
    expected = trained(x)  # random weights: large logits, compared relative to their scale
    torch.testing.assert_close(deployed(x), expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item())


@pytest.mark.parametrize("name,kwargs,sites", [
    ("nasnetalarge", {"num_features": 480, "stem_size": 16}, ["cell_stem_0", "cell_5", "cell_11"]),
    ("pnasnet5large", {}, ["cell_stem_0", "cell_3", "cell_7"]),  # 86M parameters, fixed
])
def test_nasnet_cells(name, kwargs, sites):
    # Cells take the two previous cells' outputs and apply their strides in parallel branches.
    # Many small ops: placement and the reference only, on the meta device. The reduction cell
    # after the first conv (cell_stem_0) is in timm's stem, but it is a block like MobileNetV3's
    # first one, and timm's feature_info lists its output as the reduction-4 feature.
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs).eval()
        assert find_bottlenecks(model, INPUT) == sites
        reference, matched = reference_and_sites(model, sites, torch.randn(2, *INPUT))
    assert matched == [None, *(block for block, _ in reference)]


def test_hrnet_is_refused_and_named_sites_work():
    model = timm.create_model("hrnet_w18_small", pretrained=False)
    with pytest.raises(ValueError, match=r"several resolutions side by side.*targets="):
        find_bottlenecks(model, INPUT)
    targets = ["layer1", "stage2.0.branches.0", "stage2.0.branches.1"]  # a site per branch output
    assert attach_attention(model, "bam", input_size=INPUT, targets=targets) == targets
    assert [m.channels for m in attached_attention(model).values()] == [128, 16, 32]
    model.train()
    model(torch.randn(2, *INPUT)).square().mean().backward()
    assert bam_grads(model)


# ---------------------------------------------------------------------- backbone idioms


def test_faster_rcnn_body():
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    few = dict(rpn_pre_nms_top_n_train=64, rpn_post_nms_top_n_train=32, rpn_pre_nms_top_n_test=64,
               rpn_post_nms_top_n_test=32, box_batch_size_per_image=16)  # a smaller, cheaper step
    detector = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=64, max_size=96, **few)
    base = set(detector.state_dict())
    assert attach_attention(detector.backbone.body, "bam", input_size=INPUT) == ["layer1", "layer2", "layer3"]
    assert base <= set(detector.state_dict())  # weight names unchanged: pretrained weights load
    images = [torch.rand(3, 64, 96), torch.rand(3, 64, 80)]
    targets = [{"boxes": torch.tensor([[10.0, 10, 50, 60]]), "labels": torch.tensor([1])}] * 2
    sum(detector(images, targets).values()).backward()
    assert bam_grads(detector)
    detector.eval()
    with torch.no_grad():
        assert len(detector(images)) == 2


def test_deeplabv3_backbone():
    from torchvision.models.segmentation import deeplabv3_resnet50

    model = deeplabv3_resnet50(weights=None, weights_backbone=None)
    # layer3 and layer4 are dilated (stride 8 from layer2 on): one downsampling between stages
    assert attach_attention(model.backbone, "bam", input_size=INPUT) == ["layer1"]
    model.train()
    model(torch.rand(2, 3, 48, 64))["out"].mean().backward()
    assert bam_grads(model)


def test_timm_features_only():
    model = timm.create_model("resnet18", pretrained=False, features_only=True)
    assert attach_attention(model, "bam", input_size=INPUT) == ["layer1", "layer2", "layer3"]
    features = model(torch.rand(2, *INPUT))
    assert [f.shape[1] for f in features] == [64, 64, 128, 256, 512]
    sum(f.mean() for f in features).backward()
    assert bam_grads(model)


def resnet_trunk() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])


def test_sequential_of_resnet_children():
    model = resnet_trunk()
    base = set(model.state_dict())
    assert attach_attention(model, "bam", input_size=INPUT) == ["4", "5", "6"]
    assert len(model) == 8 and base <= set(model.state_dict())  # the same modules, the same names
    assert "4.1.attention.channel.fc1.weight" in model.state_dict()  # in layer1's last block
    x = torch.rand(2, *INPUT)
    assert model(x).shape == (2, 512, 2, 3)
    with capture_attention(model.eval()) as maps:
        model(x)
    assert list(maps) == ["4", "5", "6"]


def test_module_dict_network():
    class Net(nn.ModuleDict):
        def forward(self, x):
            for stage in self.values():
                x = stage(x)
            return x

    def convs(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1), nn.ReLU())

    model = Net({"stem": nn.Conv2d(3, 16, 3, 2, 1), "s1": convs(16, 16, 1), "s2": convs(16, 32, 2),
                 "s3": convs(32, 64, 2)})
    assert attach_attention(model, "bam", input_size=INPUT) == ["s1", "s2"]
    assert list(model) == ["stem", "s1", "s2", "s3"]
    model(torch.rand(2, *INPUT)).mean().backward()
    assert bam_grads(model)


def test_container_keeps_bam_through_state_dict_copies_and_dtypes():
    model = resnet_trunk()
    attach_attention(model, "bam", input_size=INPUT)
    bam_parameters = [p for m in attached_attention(model).values() for p in m.parameters()]
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(names)) and {id(p) for p in bam_parameters} <= {id(p) for p in model.parameters()}
    x = torch.rand(1, *INPUT)
    torch.set_grad_enabled(False)
    model.eval()
    expected = model(x)
    clone = resnet_trunk()
    attach_attention(clone, "bam", input_size=INPUT)
    clone.load_state_dict(model.state_dict())  # strict round trip
    torch.testing.assert_close(clone.eval()(x), expected)
    copied = copy.deepcopy(model)
    with torch.no_grad():
        attached_attention(copied)["5"].channel.fc2.bias.add_(1.0)
    assert not torch.allclose(copied(x), expected)
    torch.testing.assert_close(model(x), expected)
    double = copy.deepcopy(model).to(torch.float64)
    assert all(p.dtype == torch.float64 for m in attached_attention(double).values() for p in m.parameters())
    torch.testing.assert_close(double(x.double()).float(), expected, rtol=1e-4, atol=1e-4)
    torch.set_grad_enabled(True)


def test_ddp_sees_each_bam_parameter_once(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = resnet_trunk()
        attach_attention(model, "bam", input_size=INPUT)
        ddp = DistributedDataParallel(model)
        ddp(torch.rand(2, *INPUT)).mean().backward()
        assert bam_grads(model)
    finally:
        dist.destroy_process_group()


def test_model_in_eval_mode_stays_in_eval_mode():
    model = torchvision.models.resnet18().eval()
    attach_attention(model, "bam", input_size=INPUT)
    assert not any(m.training for m in model.modules())
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with torch.no_grad():
        assert model(torch.rand(1, *INPUT)).shape == (1, 1000)  # a batch of one
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in statistics.items())
    trained = torchvision.models.resnet18().train()
    attach_attention(trained, "bam", input_size=INPUT)
    assert all(m.training for m in attached_attention(trained).values())
