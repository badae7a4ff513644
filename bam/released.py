"""Load BAM-ResNet weights saved by the authors' code or by pytorchcv into this repository's model.

Both releases use the released forward pass (``x * (1 + sigmoid(Mc * Ms))``, no final BN), i.e.
``create_attention("bam-released", C)``. The target model is a torchvision ResNet after
``attach_attention(model, "bam-released")``; the mapping table is in
``docs/released-checkpoints.md``::

    model = torchvision.models.resnet50()
    attach_attention(model, "bam-released")
    checkpoint = torch.load("RESNET50_IMAGENET_BAM_best.pth.tar", map_location="cpu")
    model.load_state_dict(convert_released_state_dict(checkpoint["state_dict"]))
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import torch

# Suffixes of one BAM inside each release -> suffix inside this repository's BAM.
_JONGCHAN_BAM = [
    (r"channel_att\.gate_c\.gate_c_fc_0\.", "channel.fc1."),
    (r"channel_att\.gate_c\.gate_c_bn_1\.", "channel.bn1."),
    (r"channel_att\.gate_c\.gate_c_fc_final\.", "channel.fc2."),
    (r"spatial_att\.gate_s\.gate_s_(?P<layer>conv|bn)_reduce0\.", r"spatial.reduce.\g<layer>."),
    (r"spatial_att\.gate_s\.gate_s_(?P<layer>conv|bn)_di_(?P<i>\d+)\.",
     r"spatial.dilated.\g<i>.\g<layer>."),
    (r"spatial_att\.gate_s\.gate_s_conv_final\.", "spatial.project."),
]
_PYTORCHCV_BAM = [
    (r"ch_att\.init_fc\.fc\.", "channel.fc1."),
    (r"ch_att\.init_fc\.bn\.", "channel.bn1."),
    (r"ch_att\.final_fc\.", "channel.fc2."),
    (r"sp_att\.init_conv\.(?P<layer>conv|bn)\.", r"spatial.reduce.\g<layer>."),
    (r"sp_att\.dil_convs\.conv(?P<i>\d+)\.(?P<layer>conv|bn)\.",
     lambda m: f"spatial.dilated.{int(m['i']) - 1}.{m['layer']}."),
    (r"sp_att\.final_conv\.", "spatial.project."),
]
_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)$"

# The released ResNet itself already uses torchvision's names.
_TORCHVISION_RESNET = re.compile(
    r"^((conv1|bn1|fc)|layer\d+\.\d+\.(conv\d|bn\d|downsample\.[01]))\." + _PARAM)


def _bam_rule(prefix: str, table, target: Callable[[re.Match], str]):
    """Rules mapping ``<prefix><bam suffix>`` to ``attention.<layer>.<our suffix>``."""
    rules = []
    for pattern, replacement in table:
        def convert(match, replacement=replacement):
            ours = replacement(match) if callable(replacement) else match.expand(replacement)
            return f"attention.{target(match)}.{ours}{match['param']}"

        rules.append((re.compile(prefix + pattern + r"(?P<param>" + _PARAM + ")"), convert))
    return rules


def _pytorchcv_resnet(match: re.Match) -> str:
    stage, unit, part, index, layer, param = match.groups()
    block = f"layer{stage}.{int(unit) - 1}"
    if part == "identity_conv":
        return f"{block}.downsample.{0 if layer == 'conv' else 1}.{param}"
    return f"{block}.{'conv' if layer == 'conv' else 'bn'}{index}.{param}"


_RULES = {
    "jongchan": [
        (_TORCHVISION_RESNET, lambda m: m.string),
        *_bam_rule(r"^bam(?P<n>\d+)\.", _JONGCHAN_BAM, lambda m: f"layer{m['n']}"),
    ],
    "pytorchcv": [
        (re.compile(r"^features\.init_block\.conv\.conv\." + _PARAM), lambda m: f"conv1.{m[1]}"),
        (re.compile(r"^features\.init_block\.conv\.bn\." + _PARAM), lambda m: f"bn1.{m[1]}"),
        # Every unit of pytorchcv's bamresnet.py is a BamResUnit holding a plain ResUnit as
        # `res_unit` (beside its optional `bam`), so the residual layers sit one level deeper.
        (re.compile(r"^features\.stage(\d+)\.unit(\d+)\.res_unit\.(body\.conv(\d)|identity_conv)\."
                    r"(conv|bn)\." + _PARAM), _pytorchcv_resnet),
        (re.compile(r"^output\." + _PARAM), lambda m: f"fc.{m[1]}"),
        # pytorchcv puts the BAM at the entrance of each stage's first unit, which is the exit of
        # the previous stage: stage2.unit1.bam is the BAM after torchvision's layer1.
        *_bam_rule(r"^features\.stage(?P<n>\d+)\.unit1\.bam\.", _PYTORCHCV_BAM,
                   lambda m: f"layer{int(m['n']) - 1}"),
    ],
}


def convert_released_state_dict(state_dict: Mapping[str, torch.Tensor],
                                source: str = "jongchan") -> dict[str, torch.Tensor]:
    """Rename a released BAM-ResNet state dict to a torchvision ResNet with ``bam-released``.

    ``source="jongchan"``: the authors' code (``bam1.channel_att.gate_c.gate_c_fc_0.weight``);
    ``source="pytorchcv"``: pytorchcv's ``bam_resnet*`` (``features.stage2.unit1.bam.ch_att...``,
    ``features.stage1.unit1.res_unit.body.conv1.conv.weight``).
    A ``module.`` prefix (DataParallel) is removed and a whole checkpoint with a ``state_dict``
    entry is accepted. Keys that match no rule raise a ``ValueError`` listing them.
    """
    if source not in _RULES:
        raise ValueError(f"unknown source {source!r}; choose one of {tuple(_RULES)}")
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    converted = {}
    unknown = []
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        for pattern, rename in _RULES[source]:
            match = pattern.match(name)
            if match:
                converted[rename(match)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:20]) + (", ..." if len(unknown) > 20 else "")
        raise ValueError(
            f"convert_released_state_dict(source={source!r}): {len(unknown)} key(s) match no known "
            f"BAM-ResNet name: {shown}. Is this a {source} BAM-ResNet checkpoint? (other sources: "
            f"{', '.join(s for s in _RULES if s != source)})"
        )
    return converted
