"""``python -m tasks.profile [arch] [options]``: see ``tasks/profile/cli.py`` (``--help``)."""

from tasks.profile.cli import main

if __name__ == "__main__":
    main()
