"""What every command shares: the typer app, the two consoles, exit codes, strict JSON, the
error type of the CLI itself, input expansion and the options used by several commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from ..corpus import audio_files_under
from ..errors import SpeakeridError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Speaker verification and identification.")

err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def _hide_flag_metavars() -> None:
    """typer's rich help prints a ``<bool>`` type beside every on/off flag; flags take no value."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_speakerid", False):
        return

    def display_type_rich(self, ctx):  # type: ignore[no-untyped-def]
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._speakerid = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_metavars()


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        out.print(f"speakerid {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Speaker verification and identification."""


def print_json(obj) -> None:
    """Strict JSON on stdout (NaN or infinity would be a bug: refuse rather than print it)."""
    out.print_json(json.dumps(obj, allow_nan=False, default=str))


def threshold_arg(value: float | None, flag: str = "--threshold") -> float | None:
    from ..config import check_threshold

    return None if value is None else check_threshold(value, flag)


def report_failures(failures: list[tuple[str, str]], total: int, what: str = "clips") -> None:
    """List failed inputs on stderr (the first 10, then a count)."""
    if not failures:
        return
    err.print(f"{len(failures)} of {total} {what} failed:", markup=False)
    for path, error in failures[:10]:
        err.print(f"  {path}: {error}", markup=False, soft_wrap=True)
    if len(failures) > 10:
        err.print(f"  ... and {len(failures) - 10} more")


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {rich_escape(message)}", soft_wrap=True)


class CliError(SpeakeridError):
    """A usage problem found by the CLI itself."""


def note(message: str) -> None:
    """A dim status line on stderr (the CLI's own; library messages come through logging)."""
    err.print(f"[dim]speakerid:[/dim] {message}")


def make_embedder(model: str, no_vad: bool, threads: int | None = None, min_speech_ms: float | None = None):
    from ..config import EmbedOptions, VadOptions
    from ..embedder import Embedder

    vad = VadOptions(enabled=not no_vad, **({"min_speech_ms": min_speech_ms} if min_speech_ms is not None else {}))
    return Embedder(model, vad=vad, embed=EmbedOptions(threads=threads))


#: verify and the like say what they are doing when the audio is longer than this.
LONG_AUDIO_S = 60.0


def say_long_audio(files: list[Path]) -> None:
    """One line before embedding clips long enough to take a while (verify is silent otherwise)."""
    from .. import audio

    total = 0.0
    for f in files:
        try:
            total += audio.probe(f).duration_s
        except SpeakeridError:
            return  # the embedding itself reports the problem
    if total > LONG_AUDIO_S:
        note(f"embedding {len(files)} clips ({total / 60:.1f} min of audio)…")


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; directories walked recursively for audio files (sorted)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = audio_files_under(p)
            if not found:
                raise CliError(f"{p}: no audio files found in this directory")
            files.extend(found)
        else:
            files.append(p)
    return files


MODEL_OPT = typer.Option("campplus", "--model", "-m", help="Model name (see `speakerid models list`).")


INDEX_DIR_OPT = typer.Option(Path("index/default"), "--index", "-i", help="Speaker index directory.")
WORKERS_OPT = typer.Option(None, "--workers", "-w", help="Clips processed at once, in threads (default: all cores).")
WAIT_OPT = typer.Option(0.0, "--wait", help="Seconds to wait for another writer of the index (default: fail at once).")


def finish(code: int) -> None:
    """End a command with ``code`` (a return value would be lost under typer's standalone mode)."""
    if code != EXIT_OK:
        raise typer.Exit(code)


def command_line() -> str:
    """The command as typed, for reports."""
    import shlex

    return "speakerid " + " ".join(shlex.quote(a) for a in sys.argv[1:])
