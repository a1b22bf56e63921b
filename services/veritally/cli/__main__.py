"""``python -m veritally.cli``: the ``veritally`` command, for an interpreter of choice."""

import sys

from veritally.cli.main import main

if __name__ == "__main__":  # importing the module (a walk of the package) runs nothing
    sys.exit(main())
