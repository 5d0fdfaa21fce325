"""``python -m speakerid.cli``: the same as the ``speakerid`` command."""

from . import main

main()
