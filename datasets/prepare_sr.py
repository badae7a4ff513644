"""Prepare super-resolution data: cut large training images into sub-images, list benchmark sets.

    python datasets/prepare_sr.py prepare SRC DST [--size 480] [--step 240]
    python datasets/prepare_sr.py list [--data-root PATH] [--scale 4]

``prepare`` cuts every image of SRC (searched recursively) into overlapping sub-images, PNG files
in DST with the same relative folders: decoding a 480x480 PNG costs far less than a whole 2K
photograph for each 96x96 training crop. It resumes an interrupted run. ``list`` shows the
benchmark sets found under the data root (``--data-root``, else ``$BAM_DATA_ROOT``, else this
folder) and their image counts.

Runs from a checkout, installed or not; the work is done by ``tasks.data.sr``.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, installed or not

from tasks.data.root import data_root  # noqa: E402
from tasks.data.sr import find_benchmark, list_benchmarks, prepare_subimages  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python datasets/prepare_sr.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="cut large HR images into sub-image PNGs")
    prepare.add_argument("src", help="folder of HR images (searched recursively)")
    prepare.add_argument("dst", help="output folder")
    prepare.add_argument("--size", type=int, default=480, help="sub-image side (default 480)")
    prepare.add_argument("--step", type=int, default=240, help="stride between sub-images (default 240)")
    listing = commands.add_parser("list", help="list the benchmark sets under the data root")
    listing.add_argument("--data-root", default=None,
                         help="data root (default: $BAM_DATA_ROOT, else the repository's datasets/)")
    listing.add_argument("--scale", type=int, default=4, help="SR factor the sets are read for (default 4)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            count = prepare_subimages(args.src, args.dst, size=args.size, step=args.step)
            print(f"wrote {count} sub-images to {args.dst}")
            return
        names = list_benchmarks(args.data_root, args.scale)
        for name in names:
            print(f"{name}: {len(find_benchmark(name, args.scale, args.data_root)[1])} images")
        if not names:
            print(f"no benchmark sets under {data_root(args.data_root) / 'sr'}", file=sys.stderr)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))  # a message naming the file or folder, not a traceback


if __name__ == "__main__":
    main()
