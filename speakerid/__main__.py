"""``python -m speakerid``: the same as the ``speakerid`` command."""

from .cli import main

main()
