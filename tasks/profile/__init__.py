"""Parameters and MACs of the repository's networks with and without attention, beside the BAM paper.

    python -m tasks.profile resnet50 --attention bam            # ImageNet ResNet50, v1 layout
    python -m tasks.profile wrn28_8 --dataset cifar100 --attention bam-c --json
    python -m tasks.profile --paper-table --write docs/model-zoo.md
"""
from tasks.profile.counts import profile_network
from tasks.profile.paper import NOTES, PAPER, paper_rows, paper_table

__all__ = ["NOTES", "PAPER", "paper_rows", "paper_table", "profile_network"]
