"""Parameters and MACs of the repository's networks with and without attention, beside the BAM paper.

    python -m tasks.profile resnet50 --attention bam            # ImageNet ResNet50, v1 layout
    python -m tasks.profile wrn28_8 --dataset cifar100 --attention bam-c --json
    python -m tasks.profile --paper-table --write docs/model-zoo.md
"""
from tasks.profile.cli import build_parser, main
from tasks.profile.counts import default_layout, profile_network
from tasks.profile.paper import NOTES, PAPER, PaperFigure
from tasks.profile.table import paper_rows, paper_table

__all__ = ["NOTES", "PAPER", "PaperFigure", "build_parser", "default_layout", "main", "paper_rows", "paper_table",
           "profile_network"]
