"""``python -m sentinel``: the ``sentinel`` command."""

from sentinel.cli import main

main()
