"""The ``speakerid`` command line: a small surface over the library, one module per command group.

Exit codes, the same for every command:

- 0: everything asked for was done;
- 1: the command ran to the end but some inputs failed (each is listed on stderr and kept in
  the output: the ``error`` column, the index's failures);
- 2: a usage or input error stopped the command (bad option, unreadable clip for ``verify``,
  model mismatch, index locked...): one line ``error: ...`` on stderr;
- 130: interrupted (what was finished is kept).

Library errors (``SpeakeridError``) become that one line here, in :func:`main`, and nowhere else.
"""

from __future__ import annotations

import sys

import typer

from ..errors import SpeakeridError
from . import bench, diarize, embed, identify, index, models, remote, serve  # noqa: F401  (registers the commands)
from ._common import EXIT_ERROR, EXIT_INTERRUPTED, CliError, app, err, out

__all__ = ["CliError", "app", "err", "main", "out"]


def main() -> None:
    from typer.exceptions import TyperException

    from ._progress import log_to

    log_to(err)  # the library's log records (downloads, repairs, warnings) as lines on stderr
    try:
        rv = app(standalone_mode=False)
    except SpeakeridError as exc:
        # plain write: rich would wrap long messages (paths) at 80 columns and expand :emoji:
        message = " ".join(str(exc).splitlines())
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        sys.exit(EXIT_ERROR)
    except typer.Abort:
        err.print("aborted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors (bad option, missing argument): one message
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            sys.stderr.write(f"error: {exc}\n")
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    if isinstance(rv, int) and rv:
        sys.exit(rv)


if __name__ == "__main__":
    main()
