"""``python -m tasks.sr {train,evaluate,upscale} ...``: one entry point for the SR commands."""

import importlib
import sys

COMMANDS = {
    "train": "tasks.sr.train",
    "evaluate": "tasks.sr.evaluate",
    "upscale": "tasks.sr.upscale",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        choices = ", ".join(COMMANDS)
        print(f"usage: python -m tasks.sr {{{choices}}} [options]\n"
              f"  (`python -m tasks.sr COMMAND --help` lists a command's options)", file=sys.stderr)
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
