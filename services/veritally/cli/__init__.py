"""The operator command line, ``veritally <command>``: every argparse and rich use.

One module per command (``veritally.cli.<command>``), each exposing
``add_arguments(parser)`` and ``run(args) -> int``; :mod:`veritally.cli.main` holds the
table of commands. The modules parse options into the typed values of the code they call
(launch configurations, paths, counts), print what it returns and map its typed errors
to exit statuses; nothing outside this package prints or parses a command line.
"""
