"""BAM, the Bottleneck Attention Module (Park et al.), and the tools to plug it into any CNN."""

from .bam import BAM, ChannelGate, SpatialGate
from .capture import capture_attention
from .cbam import CBAM
from .counting import count_macs, count_params, to_resnet_v1
from .placement import (attach_attention, attached_attention, attention_targets, find_blocks,
                        find_bottlenecks)
from .registry import (ATTENTIONS, attention_class, create_attention, get_attention,
                       list_attentions, register_attention)
from .released import convert_released_state_dict
from .se import SqueezeExcitation

__all__ = [
    "BAM", "ChannelGate", "SpatialGate", "SqueezeExcitation", "CBAM", "ATTENTIONS",
    "create_attention", "get_attention", "attention_class", "list_attentions", "register_attention",
    "find_bottlenecks", "find_blocks", "attach_attention", "attention_targets",
    "attached_attention", "capture_attention", "count_params", "count_macs", "to_resnet_v1",
    "convert_released_state_dict",
]
