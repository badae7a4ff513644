"""Parameters and MACs of the repository's networks with and without attention, beside the BAM paper.

    python -m tasks.profile resnet50 --attention bam            # ImageNet ResNet50, v1 layout
    python -m tasks.profile wrn28_8 --dataset cifar100 --attention bam-c --json
    python -m tasks.profile --paper-table --write docs/model-zoo.md

- ``tasks.profile.counts``: :func:`profile_network`, the counts of one configuration (meta device,
  the paper's MAC convention);
- ``tasks.profile.paper``: the paper's figures (``PAPER``) and why some rows differ (``NOTES``);
- ``tasks.profile.table``: docs/model-zoo.md, every figure of the paper beside ours;
- ``tasks.profile.cli``: the command line.

The networks come from every task (``tasks.networks``); ``bam`` itself knows none of them.
"""
from tasks.profile.cli import build_parser, main
from tasks.profile.counts import default_layout, profile_network
from tasks.profile.paper import NOTES, PAPER, PaperFigure
from tasks.profile.table import paper_rows, paper_table

__all__ = ["NOTES", "PAPER", "PaperFigure", "build_parser", "default_layout", "main", "paper_rows", "paper_table",
           "profile_network"]
