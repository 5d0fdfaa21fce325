"""`speakerid index build|add|remove|info` and `speakerid enroll`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    INDEX_DIR_OPT,
    WAIT_OPT,
    WORKERS_OPT,
    CliError,
    app,
    err,
    expand_inputs,
    finish,
    out,
    report_failures,
    warn,
)

# --- index build / add / remove / info, enroll ----------------------------------------------

index_app = typer.Typer(no_args_is_help=True, help="Build and maintain a speaker index (the gallery).")
app.add_typer(index_app, name="index")


class _BuildBar:
    """A rich progress bar fed by the indexer's BuildStatus callback (files, audio, x real time, ETA)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[audio]}"), TimeRemainingColumn(), console=err, transient=True,
                            disable=not err.is_terminal)
        self.task = None

    def __call__(self, s) -> None:
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("indexing", total=s.files_total, audio="")
        audio = f"{s.audio_s / 3600:.2f} h audio, {s.real_time_factor:.0f}x real time, {s.files_failed} failed"
        self.bar.update(self.task, completed=s.files_done, audio=audio,
                        description="indexing" if s.phase == "embedding" else s.phase)
        if s.phase == "done":
            self.stop()

    def stop(self) -> None:
        if self.task is not None:
            self.bar.stop()


def _report_build(rep, what: str = "indexed") -> None:
    hours = rep.audio_s / 3600
    speed = f"{hours:.2f} h of audio in {rep.elapsed_s:.1f} s ({rep.real_time_factor:.0f}x real time)"
    out.print(f"{what} {rep.files_embedded} files, {rep.files_skipped_known} already indexed, "
              f"{rep.files_duplicate} duplicates, {rep.files_failed} failed: "
              + (speed if rep.files_embedded else f"nothing new to embed ({rep.elapsed_s:.1f} s)"))
    thr = "none" if rep.threshold is None else f"{rep.threshold:.3f}"
    out.print(f"{rep.index_path}: {rep.speakers} speakers, {rep.utterances} clips, model {rep.model}, threshold {thr}")
    for w in rep.warnings[:10]:
        warn(w)
    if len(rep.warnings) > 10:
        err.print(f"[yellow]warning:[/yellow] ... and {len(rep.warnings) - 10} more warnings")
    if rep.failures:
        err.print("failed files are kept in the index's failures (`speakerid index info` lists them)")
        report_failures(list(rep.failures), rep.files_embedded + rep.files_failed, "files")


def _run_indexer(fn, what: str = "indexed", check=None):
    """Run an indexer call with a progress bar and print its summary (``check(report)`` may
    raise first); Ctrl-C reports what was saved and exits 130."""
    from ..indexer import BuildInterrupted

    bar = _BuildBar()
    try:
        rep = fn(bar)
    except BuildInterrupted as exc:
        bar.stop()
        _report_build(exc.report, what)
        err.print("interrupted: finished files are saved; run the same command again to finish")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        bar.stop()
    if check is not None:
        check(rep)
    _report_build(rep, what)
    return rep


def _exit_code(rep) -> int:
    """0 when every file was indexed, 1 when some failed (listed by _report_build)."""
    return EXIT_SOME_FAILED if rep.files_failed else EXIT_OK


@index_app.command("build")
def index_build(
    speakers_dir: Path = typer.Argument(..., help="DIR/<speaker>/*.wav, VoxCeleb DIR/<speaker>/<video>/*.wav, "
                                                  "or a .csv/.parquet manifest with path and speaker columns."),
    index_dir: Path = INDEX_DIR_OPT,
    model: str | None = typer.Option(None, "--model", "-m", help="Model (default: the index's own, else campplus)."),
    workers: int | None = WORKERS_OPT,
    index_type: str | None = typer.Option(None, "--index-type", help="flat | hnsw | ivf (default: the index's own, else flat)."),
    checkpoint_every: float = typer.Option(30.0, "--checkpoint-every", help="Save progress every N seconds."),
    wait: float = WAIT_OPT,
) -> None:
    """Embed a corpus into the index; clips already indexed (same content) are skipped.

    An interrupted build (Ctrl-C, kill) resumes where it stopped when run again."""
    from ..indexer import build_index

    if index_type is not None and index_type not in ("flat", "hnsw", "ivf"):
        raise CliError(f"--index-type must be flat, hnsw or ivf, got {index_type!r}")
    if checkpoint_every <= 0:
        raise CliError(f"--checkpoint-every must be positive, got {checkpoint_every}")
    finish(_exit_code(_run_indexer(lambda bar: build_index(speakers_dir, index_dir, model=model, index_type=index_type,  # type: ignore[arg-type]
                                         workers=workers, progress=bar, checkpoint_every_s=checkpoint_every,
                                         wait_s=wait))))


@index_app.command("add")
def index_add(
    paths: list[Path] = typer.Argument(..., help="Clips or folders of one speaker (with --speaker), "
                                                 "else speakers folders / manifests as for `index build`."),
    speaker: str | None = typer.Option(None, "--speaker", "-s", help="Speaker of all the clips given."),
    index_dir: Path = INDEX_DIR_OPT,
    workers: int | None = WORKERS_OPT,
    wait: float = WAIT_OPT,
) -> None:
    """Add clips to an index (created with campplus if missing); clips already indexed are skipped."""
    from ..indexer import Item, add_files, discover

    warnings: list[str] = []
    if speaker is not None:
        if not speaker.strip():
            raise CliError("--speaker must not be empty")
        items = [Item(p, speaker.strip()) for p in expand_inputs(paths)]
    else:
        items = []
        for p in paths:
            corpus = discover(p)
            items.extend(corpus)
            warnings.extend(corpus.warnings)
    for w in warnings:
        warn(w)
    finish(_exit_code(_run_indexer(lambda bar: add_files(index_dir, items, workers=workers, progress=bar,
                                                          wait_s=wait), "added")))


@index_app.command("remove")
def index_remove(
    speaker: str = typer.Argument(..., help="Speaker to remove (every clip of it)."),
    index_dir: Path = INDEX_DIR_OPT,
    wait: float = WAIT_OPT,
) -> None:
    """Remove a speaker from the index and recalibrate the open-set threshold."""
    from ..index import SpeakerIndex
    from ..indexer import remove_speaker

    n = remove_speaker(index_dir, speaker, wait_s=wait)
    info = SpeakerIndex.open(index_dir, verify=False).info()
    thr = "none" if info["threshold"] is None else f"{info['threshold']:.3f}"
    out.print(f"removed {speaker} ({n} clips); {info['speakers']} speakers left, threshold {thr}")


@index_app.command("info")
def index_info(
    index_dir: Path = INDEX_DIR_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Counts, model, size on disk, threshold and failed files of an index."""
    from ..index import SpeakerIndex

    ix = SpeakerIndex.open(index_dir)
    info = ix.info()
    fails = ix.failures().to_pylist()
    utt = ix.utterances()
    audio_s = float(sum(utt["duration_s"].to_pylist()))
    if as_json:
        info.update(audio_s=round(audio_s, 3),
                    failed_files=[{"path": f["path"], "error": f["error"], "at": f["at"].isoformat()} for f in fails])
        out.print_json(json.dumps(info, default=str))
        return
    thr = "none" if info["threshold"] is None else f"{info['threshold']:.3f} ({info['threshold_method']})"
    rows = [
        ("index", f"{info['path']} (version {info['version']})"),
        ("model", f"{info['model']} ({info['dim']}-d, weights {info['weights_sha256'][:12]}…)"),
        ("type", f"{info['index_type']} ({info['faiss_index']})"),
        ("speakers", str(info["speakers"])),
        ("clips", f"{info['utterances']} ({audio_s / 3600:.2f} h of audio)"),
        ("failures", str(info["failures"])),
        ("threshold", thr),
        ("size", f"{info['bytes_on_disk'] / 1e6:.2f} MB"),
        ("updated", str(info["updated_at"])),
    ]
    for k, v in rows:
        out.print(f"{k:<10} {v}", markup=False)
    for f in fails[:10]:
        out.print(f"  failed: {f['path']}: {f['error']}", markup=False)
    if len(fails) > 10:
        out.print(f"  ... and {len(fails) - 10} more (--json lists them all)")


@app.command()
def enroll(
    speaker: str = typer.Argument(..., help="Name of the speaker."),
    clips: list[Path] = typer.Argument(..., help="Clips of that speaker (folders walked recursively)."),
    index_dir: Path = INDEX_DIR_OPT,
    model: str | None = typer.Option(None, "--model", "-m", help="Model of a new index (default campplus)."),
    wait: float = WAIT_OPT,
) -> None:
    """Enrol a speaker from a few clips (the index is created if missing).

    Exits 2 when no clip could be embedded, 1 when some failed."""
    from ..indexer import Item, add_files

    if not speaker.strip():
        raise CliError("the speaker name must not be empty")
    items = [Item(p, speaker.strip()) for p in expand_inputs(clips)]
    def check(rep) -> None:
        if rep.files_embedded + rep.files_skipped_known + rep.files_duplicate == 0:
            raise CliError(f"no clip of {speaker} could be embedded (first error: {rep.failures[0][1]})")

    finish(_exit_code(_run_indexer(lambda bar: add_files(index_dir, items, model=model, progress=bar,
                                                          wait_s=wait), "enrolled", check)))


