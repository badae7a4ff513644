"""``python -m tasks.profile [arch] [options]``: the command line (``--help``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bam.placement import PLACEMENTS
from tasks.common.cli import positive_int, run_cli
from tasks.networks import input_size_for, list_datasets, list_networks, load_zoo, network_datasets, valid_attentions
from tasks.profile.counts import profile_network
from tasks.profile.paper import paper_table
from tasks.utils.files import write_text_atomic


def _text_report(result: dict) -> str:
    figures = result["paper"] or {}  # the paper's rows for the baseline and this attention only
    paper = lambda attention, what: figures.get(attention, {}).get(what, "-")  # noqa: E731
    h, w = result["input_size"][1:]
    layout = f", layout {result['layout']}" if result["layout"] else ""
    title = (f"{result['arch']} on {result['dataset']} ({h}x{w}){layout}, attention {result['attention']}"
             + (f" ({result['placement']})" if result["placement"] else ""))
    gmacs = lambda value: "n/a" if value is None else f"{value / 1e9:.3f}"  # noqa: E731
    rows = [("", "params", "GMACs", "paper params", "paper GMACs"),
            ("base", f"{result['base_params']:,}", gmacs(result["base_macs"]), paper("none", "params"),
             paper("none", "macs"))]
    if result["attention"] != "none":
        rows.append((f"+{result['attention']}", f"{result['params']:,}", gmacs(result["macs"]),
                     paper(result["attention"], "params"), paper(result["attention"], "macs")))
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
    if figures:
        tables = sorted({figure["table"] for figure in figures.values()})
        lines.append(f"paper: Table {', '.join(tables)} (parameters in millions, GMACs)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    load_zoo()  # the help and the choices list every network and data set of the repository
    parser = argparse.ArgumentParser(
        prog="python -m tasks.profile",
        description="Parameters and MACs (paper convention: conv + linear multiply-accumulates) of a network "
                    "with and without attention, beside the BAM paper's figures.")
    parser.add_argument("arch", nargs="?", help=f"network name: {', '.join(list_networks())}")
    parser.add_argument("--dataset", choices=list_datasets(),
                        help="data set variant (default: imagenet if the network has one, else its only data set)")
    parser.add_argument("--attention", default="bam", choices=valid_attentions(),
                        help="attention module; bam-c = BAM in every convolution block (default: bam)")
    parser.add_argument("--placement", choices=PLACEMENTS,
                        help="where attention goes (default: bottleneck for bam and bam-released, block for se "
                             "and cbam)")
    parser.add_argument("--layout", choices=("v1", "v1.5"),
                        help="ResNet stride layout. Default: v1 (stride on the first 1x1 conv, the paper's "
                             "convention) for ResNet-style networks; other networks are counted as defined")
    parser.add_argument("--input-size", nargs=2, type=positive_int, metavar=("H", "W"),
                        help="image size for the MAC count (default: 32 32 for cifar100, 224 224 for imagenet)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--paper-table", action="store_true",
                        help="print the Markdown comparison of every network of the paper's Tables 2, 3, 4, 10")
    parser.add_argument("--write", type=Path, metavar="PATH", help="with --paper-table: write the Markdown to PATH")
    return parser


def _profile(args: argparse.Namespace) -> dict | str:
    if args.paper_table:
        text = paper_table()
        if args.write:
            write_text_atomic(args.write, text)
            print(f"wrote {args.write}")
        else:
            print(text, end="")
        return text
    if args.write:
        raise ValueError("--write goes with --paper-table")
    if not args.arch:
        raise ValueError(f"give a network name (one of: {', '.join(list_networks())}) or --paper-table")
    input_size = None
    if args.input_size:
        channels = input_size_for(args.dataset or network_datasets(args.arch)[0])[0]
        input_size = (channels, *args.input_size)
    result = profile_network(args.arch, args.dataset, args.attention, args.layout, args.placement, input_size)
    print(json.dumps(result, indent=2) if args.json else _text_report(result))
    return result


def main(argv: list[str] | None = None) -> dict | str:
    return run_cli(_profile, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
