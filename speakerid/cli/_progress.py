"""The CLI's one rich adapter for the library's progress protocol and its log records.

``RichProgress`` is a ``progress(stage, done, total, **extra)`` callback: one bar per stage with
its count, ETA and, when the library passes ``audio_s``, hours of audio and x real time. It
draws only on a terminal. ``log_to(console)`` shows the library's ``speakerid`` log records
(model downloads, conversions, warnings) as dim lines on stderr.
"""

from __future__ import annotations

import logging
import threading
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

__all__ = ["RichProgress", "log_to"]


class RichProgress:
    """A progress callback drawing one rich bar per stage (use as a context manager)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<17}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[audio]}"), TimeRemainingColumn(),
            console=console, transient=True, disable=not console.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._live = False

    def __enter__(self) -> RichProgress:
        self.progress.start()
        self._live = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._live:
            self.progress.stop()
            self._live = False

    def __call__(self, stage: str, done: int, total: int | None, /, **extra: float) -> None:
        with self._lock:
            if not self._live:
                self.__enter__()
            if stage not in self.tasks:
                self.tasks[stage] = self.progress.add_task(stage, total=total, audio="")
                self._started[stage] = time.monotonic()
            audio = ""
            if "audio_s" in extra:
                elapsed = max(time.monotonic() - self._started[stage], 1e-9)
                audio_s = float(extra["audio_s"])
                audio = f"{audio_s / 3600:.2f} h audio, {audio_s / elapsed:.0f}x real time"
                if "failed" in extra:
                    audio += f", {int(extra['failed'])} failed"
            self.progress.update(self.tasks[stage], completed=done, total=total, audio=audio)


class _ConsoleHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = escape(record.getMessage())
            if record.levelno >= logging.WARNING:
                self.console.print(f"[yellow]warning:[/yellow] {text}", soft_wrap=True)
            else:
                self.console.print(f"[dim]speakerid:[/dim] {text}", soft_wrap=True)
        except Exception:  # a broken pipe on stderr must not stop the work
            self.handleError(record)


def log_to(console: Console) -> None:
    """Show the library's INFO and WARNING log records on ``console`` (once per process)."""
    logger = logging.getLogger("speakerid")
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler(console))
    logger.setLevel(logging.INFO)
