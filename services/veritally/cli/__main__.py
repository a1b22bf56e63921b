"""``python -m veritally.cli``: the ``veritally`` command, for an interpreter of choice."""

import sys

from veritally.cli.main import main

sys.exit(main())
