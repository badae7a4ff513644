"""Parameters and MACs of a network with and without attention, beside the BAM paper's figures.

    python -m bam.profile resnet50 --attention bam            # ImageNet ResNet50, v1 layout
    python -m bam.profile wrn28_8 --dataset cifar100 --attention bam-c --json
    python -m bam.profile --paper-table --write docs/model-zoo.md

Counting follows the paper (reference facts, section 3): MACs of convolutions and linear layers,
on the ResNet v1 stride layout by default. Networks are built on PyTorch's meta device, so even
the 68M-parameter ResNeXt is counted in a moment without allocating its weights.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from bam.architectures import (ATTENTION_ALIASES, build_network, default_placement, get_network_entry,
                               input_size_for, list_datasets, list_networks, network_datasets, valid_attentions)
from bam.counting import count_macs, count_params
from bam.placement import attach_attention

__all__ = ["PAPER", "PaperFigure", "default_layout", "default_placement", "main", "paper_table", "profile_network"]


@dataclass(frozen=True)
class PaperFigure:
    """A row of the paper as printed: parameters ("23.71M"), GMACs ("1.22"), and its table."""

    params: str
    macs: str
    table: str


# The paper's figures, keyed by (dataset, arch), then by attention ("none" is the baseline).
# Table 3: CIFAR-100 baselines and +BAM; Table 2: +BAM-C; Table 10: +SE; Table 4: ImageNet.
PAPER: dict[tuple[str, str], dict[str, PaperFigure]] = {
    ("cifar100", "resnet50"): {"none": PaperFigure("23.71M", "1.22", "3"), "bam": PaperFigure("24.07M", "1.25", "3"),
                               "bam-c": PaperFigure("28.98M", "1.37", "2"), "se": PaperFigure("26.24M", "1.23", "10")},
    ("cifar100", "resnet101"): {"none": PaperFigure("42.70M", "2.44", "3"), "bam": PaperFigure("43.06M", "2.46", "3")},
    ("cifar100", "preresnet110"): {"none": PaperFigure("1.726M", "0.245", "3"),
                                   "bam": PaperFigure("1.733M", "0.246", "3"),
                                   "bam-c": PaperFigure("2.17M", "0.275", "2"), "se": PaperFigure("1.93M", "0.245", "10")},
    ("cifar100", "wrn28_8"): {"none": PaperFigure("23.40M", "3.36", "3"), "bam": PaperFigure("23.42M", "3.37", "3"),
                              "bam-c": PaperFigure("23.78M", "3.39", "2"), "se": PaperFigure("23.58M", "3.36", "10")},
    ("cifar100", "wrn28_10"): {"none": PaperFigure("36.54M", "5.24", "3"), "bam": PaperFigure("36.57M", "5.25", "3")},
    ("cifar100", "wrn40_10"): {"none": PaperFigure("55.90M", "8.07", "3"), "bam": PaperFigure("55.94M", "8.08", "3")},
    ("cifar100", "resnext29_8x64d"): {"none": PaperFigure("34.52M", "4.99", "3"),
                                      "bam": PaperFigure("34.61M", "5.00", "3"),
                                      "bam-c": PaperFigure("35.60M", "5.07", "2")},
    ("cifar100", "resnext29_16x64d"): {"none": PaperFigure("68.25M", "9.88", "3"),
                                       "bam": PaperFigure("68.34M", "9.90", "3"),
                                       "se": PaperFigure("68.81M", "9.88", "10")},
    ("cifar100", "densenet100_bc"): {"none": PaperFigure("0.8M", "0.29", "3"), "bam": PaperFigure("0.84M", "0.30", "3")},
    ("imagenet", "resnet18"): {"none": PaperFigure("11.69M", "1.81", "4"), "bam": PaperFigure("11.71M", "1.82", "4")},
    ("imagenet", "resnet50"): {"none": PaperFigure("25.56M", "3.86", "4"), "bam": PaperFigure("25.92M", "3.94", "4")},
    ("imagenet", "resnet101"): {"none": PaperFigure("44.55M", "7.57", "4"), "bam": PaperFigure("44.91M", "7.65", "4")},
    ("imagenet", "wrn18_1.5"): {"none": PaperFigure("25.88M", "3.87", "4"), "bam": PaperFigure("25.93M", "3.88", "4")},
    ("imagenet", "wrn18_2.0"): {"none": PaperFigure("45.62M", "6.70", "4"), "bam": PaperFigure("45.71M", "6.72", "4")},
    ("imagenet", "resnext50_32x4d"): {"none": PaperFigure("25.03M", "3.77", "4"),
                                      "bam": PaperFigure("25.39M", "3.85", "4")},
    ("imagenet", "mobilenet_v2"): {"none": PaperFigure("3.505M", "0.300", "4"),
                                   "bam": PaperFigure("3.516M", "0.307", "4")},
    ("imagenet", "squeezenet1_1"): {"none": PaperFigure("1.24M", "0.290", "4"), "bam": PaperFigure("1.26M", "0.304", "4")},
}

# Why a row differs from the paper, keyed like PAPER plus the attention. The paper-table test
# requires a note exactly for the rows that differ, so a note cannot outlive its discrepancy.
# Fields in braces are filled from the row's own counts, so the figures quoted cannot drift.
_EXTRA_BN = ("Two more parameters per channel in each module (the size of one more BatchNorm over its input "
             "channels, which the paper's equations do not have) would reach every +BAM parameter figure of "
             "Tables 3 and 4 except MobileNetV2's; we keep the module the equations define.")
_SAME_SITES = ("BAM sits at the same places (after `layer1`, `layer2`) with the same widths as in {twin}, whose "
               "row matches, and adds the same {overhead_params:,} parameters: {params_m:.4f}M, {params_gap:,} "
               "parameters under the rounding boundary of the printed figure. " + _EXTRA_BN)
NOTES: dict[tuple[str, str, str], str] = {
    ("cifar100", "resnet101", "none"): (
        "Ours {macs_g:.4f} G on the v1 layout (2.510 G on v1.5), {macs_gap_g:.4f} G under the rounding boundary of "
        "the printed 2.44; the parameters and the +BAM MACs (2.46) match, as do the ImageNet ResNet101 MACs. "
        "The paper's counter is not stated."),
    ("cifar100", "preresnet110", "bam"): (
        "BAM before the two downsamplings (64 and 128 channels) adds {overhead_params:,} parameters: "
        "{params_m:.5f}M, {params_gap:,} parameters under the rounding boundary of the printed 1.733M. " + _EXTRA_BN),
    ("cifar100", "wrn28_8", "bam"): (
        "Ours {macs_g:.4f} G (+{overhead_macs_g:.4f} G for BAM), {macs_gap_g:.4f} G under the rounding boundary of "
        "the printed 3.37; the parameters match, and so do the same modules' MACs in WRN-28-10 (5.25)."),
    ("cifar100", "wrn40_10", "bam"): _SAME_SITES,
    ("cifar100", "resnext29_8x64d", "none"): (
        "Ours {macs_g:.4f} G on the v1 layout (5.387 G on v1.5), {macs_gap_g:.4f} G under the rounding boundary of the "
        "printed 4.99; the parameters and the +BAM MACs (5.00) match."),
    ("cifar100", "resnext29_16x64d", "bam"): _SAME_SITES,
    ("imagenet", "mobilenet_v2", "none"): (
        "torchvision's MobileNetV2 has {macs_g:.4f} G MACs; the paper prints the MobileNetV2 paper's rounded "
        "300M. The parameters match."),
    ("imagenet", "mobilenet_v2", "bam"): (
        "The paper does not say where BAM goes in MobileNetV2. The generic bottleneck placement puts one "
        "before each stride-2 inverted-residual block after the stem ({sites}): +{overhead_params:,} parameters "
        "and +{overhead_macs_g:.4f} G, against the paper's +0.011M and +0.007 G."),
    ("imagenet", "squeezenet1_1", "none"): (
        "torchvision's SqueezeNet 1.1 (the parameters match) has {macs_g:.3f} G conv + linear MACs at 224x224 "
        "(0.388 G at 227x227); the paper's 0.290 G is not reproduced by this count, its counter is not stated."),
    ("imagenet", "squeezenet1_1", "bam"): (
        "The base MACs differ (previous row). BAM before the two max-pools after the stem ({sites}) adds "
        "+{overhead_macs_g:.4f} G, close to the paper's +0.014 G; the parameters match."),
    ("cifar100", "resnet50", "bam-c"): (
        "The paper only says 'BAM in every convolution block'; ours puts one after each of the {num_sites} "
        "residual blocks (+{overhead_params:,} parameters, {params_m:.3f}M in all); the MACs match."),
    ("cifar100", "preresnet110", "bam-c"): (
        "As for ResNet50: one BAM after each of the {num_sites} blocks (+{overhead_params:,} parameters), "
        "{params_m:.3f}M in all; the MACs match."),
    ("cifar100", "wrn28_8", "bam-c"): (
        "As for ResNet50: one BAM after each of the {num_sites} blocks (+{overhead_params:,} parameters), "
        "{params_m:.3f}M in all; the MACs match."),
    ("cifar100", "resnext29_16x64d", "se"): (
        "SE (r = 16) after each of the {num_sites} blocks adds {overhead_params:,} parameters; the paper's SE "
        "variant of this row is not described further (+0.56M printed). The MACs match."),
}
_TWINS = {"wrn40_10": "WRN-28-10", "resnext29_16x64d": "ResNeXt29 8x64d"}

_CLI_ATTENTIONS = ("none", "bam", "bam-c", "se", "cbam", "bam-released")


def default_layout(arch: str, dataset: str) -> str:
    """The paper's convention: v1 for ResNet-style networks, the network as defined otherwise."""
    return "v1" if get_network_entry(arch, dataset).resnet_blocks else "v1.5"


@functools.lru_cache(maxsize=None)
def _counts(arch: str, dataset: str, layout: str, attention: str, placement: str,
            input_size: tuple[int, int, int]) -> tuple[int, int, tuple[str, ...], tuple[int | None, ...], dict | None]:
    """(params, MACs, attention sites, their widths, parts) of one configuration; cached.

    ``parts`` is the network's own split of the counts (e.g. UperNet's encoder and decoder) when
    the network offers one through a ``profile_parts(input_size)`` method.
    """
    # Meta tensors carry shapes only: parameter counts, shape tracing and FlopCounterMode all work
    # on them, so even the 68M-parameter ResNeXt is counted without allocating its weights. Only
    # the construction runs under the device context: tracing and counting run faster outside it,
    # their tensors follow the parameters' device.
    attention, placement = ATTENTION_ALIASES.get(attention, (attention, placement))
    if get_network_entry(arch, dataset).places_attention:  # the builder attaches attention itself
        with torch.device("meta"):
            model = build_network(arch, dataset, attention=attention, placement=placement, layout=layout)
        sites = list(getattr(model, "attention", {}))
    else:
        with torch.device("meta"):
            model = build_network(arch, dataset, layout=layout)
        sites = [] if attention == "none" else attach_attention(model, attention, placement,
                                                                input_size=input_size_for(dataset))
    modules = model.attention.values() if sites else ()
    widths = tuple(getattr(module, "channels", None) for module in modules)
    parts = model.eval().profile_parts(input_size) if callable(getattr(model, "profile_parts", None)) else None
    return count_params(model), _macs_or_none(model, input_size), tuple(sites), widths, parts


def _macs_or_none(model, input_size) -> int | None:
    """MACs, or None for networks whose work depends on the data (a detector's proposals): shape-only
    meta tensors cannot run their data-dependent operations, and a guess would mislead."""
    try:
        return count_macs(model, input_size)
    except NotImplementedError:
        return None


def profile_network(arch: str, dataset: str | None = None, attention: str = "bam", layout: str | None = None,
                    placement: str | None = None, input_size: tuple[int, int, int] | None = None) -> dict:
    """Counts of ``arch`` with and without ``attention`` (plus the paper's figures) as a dict."""
    dataset = dataset or network_datasets(arch)[0]
    layout = layout or default_layout(arch, dataset)
    placement = placement or default_placement(attention)
    if attention not in _CLI_ATTENTIONS and attention not in valid_attentions():
        raise ValueError(f"unknown attention {attention!r}; valid names: {', '.join(_CLI_ATTENTIONS)}")
    input_size = tuple(int(v) for v in (input_size or input_size_for(dataset)))

    base_params, base_macs, _, _, base_parts = _counts(arch, dataset, layout, "none", "bottleneck", input_size)
    params, macs, sites, widths, parts = _counts(arch, dataset, layout, attention, placement, input_size)
    figures = PAPER.get((dataset, arch), {})
    paper = {key: {"params": fig.params, "macs": fig.macs, "table": fig.table}
             for key, fig in figures.items() if key in ("none", attention)}
    return {
        "arch": arch, "dataset": dataset, "attention": attention,
        "placement": None if attention == "none" else ATTENTION_ALIASES.get(attention, (attention, placement))[1],
        "layout": layout if get_network_entry(arch, dataset).resnet_blocks else None,
        "input_size": list(input_size),
        "params": params, "macs": macs, "base_params": base_params, "base_macs": base_macs,
        "overhead_params": params - base_params,
        "overhead_macs": None if macs is None else macs - base_macs,
        "overhead_params_percent": 100.0 * (params - base_params) / base_params,
        "overhead_macs_percent": 100.0 * (macs - base_macs) / base_macs if base_macs else None,
        "attention_sites": list(sites), "attention_channels": list(widths),
        "paper": paper or None,
        **({"parts": {"base": base_parts, "attention": parts}} if parts else {}),
    }


# ----------------------------------------------------------------------------------------------
# Comparing with the paper's printed precision
def _decimals(printed: str) -> int:
    number = printed.rstrip("MG")
    return len(number.split(".")[1]) if "." in number else 0


def format_like(value: int, printed: str, scale: float) -> str:
    """``value / scale`` with as many decimals as the paper printed (``printed`` keeps its unit)."""
    unit = "M" if printed.endswith("M") else ""
    return f"{value / scale:.{_decimals(printed)}f}{unit}"


def matches(value: int, printed: str, scale: float) -> bool:
    return format_like(value, printed, scale) == printed


def format_params(value: int, printed: str | None = None) -> str:
    return format_like(value, printed, 1e6) if printed else f"{value / 1e6:.3f}M"


def format_macs(value: int, printed: str | None = None) -> str:
    return format_like(value, printed, 1e9) if printed else f"{value / 1e9:.3f}"


# ----------------------------------------------------------------------------------------------
# The comparison table of docs/model-zoo.md
_SECTIONS = (
    ("Table 3: CIFAR-100, BAM at the bottlenecks", "cifar100", ("none", "bam")),
    ("Table 4: ImageNet-1K, BAM at the bottlenecks", "imagenet", ("none", "bam")),
    ("Table 2: CIFAR-100, BAM in every convolution block (BAM-C)", "cifar100", ("bam-c",)),
    ("Table 10: CIFAR-100, SE in every convolution block", "cifar100", ("se",)),
)


def _site_summary(sites: list[str]) -> str:
    if len(sites) > 4:
        return f"{len(sites)} blocks"
    return ", ".join(f"`{site}`" for site in sites) or "-"


def _gap(value: int, printed: str, scale: float) -> int:
    """How far ``value`` lies below the smallest count that rounds to ``printed`` (negative: above it)."""
    lowest = (float(printed.rstrip("MG")) - 0.5 * 10 ** -_decimals(printed)) * scale
    return round(lowest - value)


def _note(dataset: str, arch: str, attention: str, result: dict) -> str:
    figures = PAPER[(dataset, arch)]
    template = NOTES.get((dataset, arch, attention), "")
    twin = _TWINS.get(arch, "")
    return template.format(
        params_m=result["params"] / 1e6, macs_g=result["macs"] / 1e9,
        overhead_params=result["overhead_params"], overhead_macs_g=result["overhead_macs"] / 1e9,
        num_sites=len(result["attention_sites"]), sites=", ".join(f"`{s}`" for s in result["attention_sites"]),
        twin=twin,
        params_gap=_gap(result["params"], figures[attention].params, 1e6),
        macs_gap_g=_gap(result["macs"], figures[attention].macs, 1e9) / 1e9)


def paper_rows() -> list[dict]:
    """One dict per (network, attention) figure of the paper, with our counts beside it."""
    rows = []
    for title, dataset, attentions in _SECTIONS:
        for (row_dataset, arch), figures in PAPER.items():
            if row_dataset != dataset:
                continue
            for attention in attentions:
                if attention not in figures:
                    continue
                result = profile_network(arch, dataset, attention)
                figure = figures[attention]
                params_ok = matches(result["params"], figure.params, 1e6)
                macs_ok = matches(result["macs"], figure.macs, 1e9)
                rows.append({"section": title, "dataset": dataset, "arch": arch, "attention": attention,
                             "layout": result["layout"] or "-", "params": result["params"], "macs": result["macs"],
                             "paper_params": figure.params, "paper_macs": figure.macs, "table": figure.table,
                             "params_match": params_ok, "macs_match": macs_ok,
                             "sites": result["attention_sites"], "channels": result["attention_channels"],
                             "note": _note(dataset, arch, attention, result)})
    return rows


def paper_table() -> str:
    """The Markdown comparison of every network figure of the paper with ours (docs/model-zoo.md)."""
    lines = [
        "# Model zoo: parameters and MACs against the BAM paper",
        "",
        "Generated by `python -m bam.profile --paper-table --write docs/model-zoo.md`; do not edit by",
        "hand (`tests/test_profile.py` checks that this file equals the generated output).",
        "",
        "Conventions (see `bam/profile.py`): parameters in millions; GMACs are multiply-accumulates of",
        "convolutions and linear layers (`torch.utils.flop_counter`, FLOPs / 2), counted on the ResNet v1",
        "stride layout (stride on the first 1x1 convolution of a downsampling bottleneck) as the paper",
        "did; networks without that layout are counted as defined. Inputs are 32x32 (CIFAR-100) and",
        "224x224 (ImageNet). BAM follows the paper's equations (BN at the end of both branches, r = 16,",
        "d = 4) and is placed by the one generic call `bam.attach_attention`. Ours is printed with the",
        "paper's precision; a row is marked ✗ when it differs at that precision.",
        "",
    ]
    section = None
    for row in paper_rows():
        if row["section"] != section:
            section = row["section"]
            if lines[-1]:
                lines.append("")  # blank line closing the previous table
            lines += [f"## {section}", "",
                      "| network | attention | layout | params (ours / paper) | GMACs (ours / paper) | match "
                      "| attention after | why they differ |",
                      "|---|---|---|---|---|---|---|---|"]
        params = f"{format_params(row['params'], row['paper_params'])} / {row['paper_params']}"
        macs = f"{format_macs(row['macs'], row['paper_macs'])} / {row['paper_macs']}"
        mark = "✓" if row["params_match"] and row["macs_match"] else (
            "✗ " + " ".join(what for what, ok in (("params", row["params_match"]), ("MACs", row["macs_match"]))
                            if not ok))
        lines.append(f"| {row['arch']} | {row['attention']} | {row['layout']} | {params} | {macs} | {mark} "
                     f"| {_site_summary(row['sites'])} | {row['note']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Command line
def _text_report(result: dict) -> str:
    figures = result["paper"] or {}
    base_fig, fig = figures.get("none"), figures.get(result["attention"]) if result["attention"] != "none" else None
    h, w = result["input_size"][1:]
    layout = f", layout {result['layout']}" if result["layout"] else ""
    title = (f"{result['arch']} on {result['dataset']} ({h}x{w}){layout}, attention {result['attention']}"
             + (f" ({result['placement']})" if result["placement"] else ""))
    gmacs = lambda value: "n/a" if value is None else f"{value / 1e9:.3f}"  # noqa: E731
    rows = [("", "params", "GMACs", "paper params", "paper GMACs"),
            ("base", f"{result['base_params']:,}", gmacs(result["base_macs"]),
             base_fig["params"] if base_fig else "-", base_fig["macs"] if base_fig else "-")]
    if result["attention"] != "none":
        rows.append((f"+{result['attention']}", f"{result['params']:,}", gmacs(result["macs"]),
                     fig["params"] if fig else "-", fig["macs"] if fig else "-"))
        rows.append(("overhead", f"+{result['overhead_params']:,} ({result['overhead_params_percent']:+.2f}%)",
                     "n/a" if result["macs"] is None else
                     f"+{result['overhead_macs'] / 1e9:.3f} ({result['overhead_macs_percent']:+.2f}%)", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [title] + ["  ".join(cell.rjust(width) if i else cell.ljust(width)
                                 for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]
    for label, split in (result.get("parts") or {}).items():
        if split:
            name = "base" if label == "base" else f"+{result['attention']}"
            lines.append(f"{name} by part: " + ", ".join(
                f"{part} {counts['params']:,} params / {counts['macs'] / 1e9:.3f} GMACs"
                for part, counts in split.items()))
    if result["attention_sites"]:
        lines.append(f"attention after: {', '.join(result['attention_sites'])}")
    if result["macs"] is None:
        lines.append("MACs: not counted, this network's work depends on its input (e.g. a detector's proposals)")
    if base_fig or fig:
        tables = sorted({f["table"] for f in (base_fig, fig) if f})
        lines.append(f"paper: Table {', '.join(tables)} (parameters in millions, GMACs)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bam.profile",
        description="Parameters and MACs (paper convention: conv + linear multiply-accumulates) of a network "
                    "with and without attention, beside the BAM paper's figures.")
    parser.add_argument("arch", nargs="?", help=f"network name: {', '.join(list_networks())}")
    parser.add_argument("--dataset", choices=list_datasets(),
                        help="data set variant (default: imagenet if the network has one, else its only data set)")
    parser.add_argument("--attention", default="bam", choices=_CLI_ATTENTIONS,
                        help="attention module; bam-c = BAM in every convolution block (default: bam)")
    parser.add_argument("--placement", choices=("bottleneck", "block"),
                        help="where attention goes (default: bottleneck for bam and bam-released, block for se "
                             "and cbam)")
    parser.add_argument("--layout", choices=("v1", "v1.5"),
                        help="ResNet stride layout. Default: v1 (stride on the first 1x1 conv, the paper's "
                             "convention) for ResNet-style networks; other networks are counted as defined")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                        help="image size for the MAC count (default: 32 32 for cifar100, 224 224 for imagenet)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--paper-table", action="store_true",
                        help="print the Markdown comparison of every network of the paper's Tables 2, 3, 4, 10")
    parser.add_argument("--write", type=Path, metavar="PATH", help="with --paper-table: write the Markdown to PATH")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.paper_table:
        text = paper_table()
        if args.write:
            args.write.parent.mkdir(parents=True, exist_ok=True)
            args.write.write_text(text, encoding="utf-8")
            print(f"wrote {args.write}")
        else:
            print(text, end="")
        return 0
    if args.write:
        parser.error("--write goes with --paper-table")
    if not args.arch:
        parser.error(f"give a network name (one of: {', '.join(list_networks())}) or --paper-table")
    if args.arch not in list_networks():
        parser.error(f"unknown architecture {args.arch!r}; valid names: {', '.join(list_networks())}")
    input_size = None
    if args.input_size:
        if min(args.input_size) < 1:
            parser.error(f"--input-size must be positive, got {args.input_size}")
        channels = input_size_for(args.dataset or network_datasets(args.arch)[0])[0]
        input_size = (channels, *args.input_size)
    try:
        result = profile_network(args.arch, args.dataset, args.attention, args.layout, args.placement, input_size)
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(result, indent=2) if args.json else _text_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
