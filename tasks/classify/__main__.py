"""``python -m tasks.classify [options]``: see ``tasks/classify/train.py`` (``--help``)."""

from tasks.classify.train import main

if __name__ == "__main__":
    main()
