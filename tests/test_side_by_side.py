"""Runs trained side by side report their results and failures as runs trained one after the
other do (the signal and equal-weights checks are in test_signals.py)."""

from __future__ import annotations

import argparse

import pytest

from tasks.common.side_by_side import train_side_by_side


def train_or_fail(args: argparse.Namespace) -> dict:  # runs in a child process, imported by name
    if args.attention == "bad":
        raise ValueError("--lr must be positive, got -1.0")
    if args.attention == "bug":
        raise KeyError("a bug")
    return {"attention": args.attention, "label": args.run_label}


def _runs(*attentions: str) -> list[argparse.Namespace]:
    return [argparse.Namespace(attention=attention) for attention in attentions]


def test_summaries_come_back_in_run_order():
    summaries = train_side_by_side(train_or_fail, _runs("none", "bam"), ["sr none", "sr bam"])
    assert summaries == [{"attention": "none", "label": "sr none"}, {"attention": "bam", "label": "sr bam"}]


def test_an_error_in_one_run_is_one_line_naming_the_run_and_a_bug_keeps_its_traceback():
    with pytest.raises(ValueError, match=r"^sr bad: --lr must be positive, got -1.0$"):
        train_side_by_side(train_or_fail, _runs("none", "bad"), ["sr none", "sr bad"])
    with pytest.raises(RuntimeError, match=r"the sr bug run failed: Traceback(.|\n)*KeyError: 'a bug'"):
        train_side_by_side(train_or_fail, _runs("bug", "none"), ["sr bug", "sr none"])
