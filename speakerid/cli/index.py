"""`speakerid index build|add|remove|info|verify|rollback` and `speakerid enroll`.

Every command takes ``--json``: one strict JSON object on stdout (for build, add and enroll the
indexer's BuildReport), with warnings and failed inputs still listed on stderr.
"""

from __future__ import annotations

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
    print_json,
    report_failures,
    warn,
)
from ._progress import RichProgress

index_app = typer.Typer(no_args_is_help=True, help="Build and maintain a speaker index (the gallery).")
app.add_typer(index_app, name="index")

JSON_OPT = typer.Option(False, "--json", help="Print one JSON object.")


def _report_build(rep, what: str, as_json: bool) -> None:
    """The summary of a build, add or enrol: the report as JSON, or two lines; then its
    warnings and failed files on stderr."""
    if as_json:
        print_json(rep.to_dict())
    else:
        hours = rep.audio_s / 3600
        speed = f"{hours:.2f} h of audio in {rep.elapsed_s:.1f} s ({rep.real_time_factor:.0f}x real time)"
        out.print(f"{what} {rep.files_embedded} files, {rep.files_skipped_known} already indexed, "
                  f"{rep.files_duplicate} duplicates, {rep.files_failed} failed: "
                  + (speed if rep.files_embedded else f"nothing new to embed ({rep.elapsed_s:.1f} s)"))
        thr = "none" if rep.threshold is None else f"{rep.threshold:.3f}"
        out.print(f"{rep.index_path}: {rep.speakers} speakers, {rep.utterances} clips, model {rep.model}, "
                  f"threshold {thr}")
    for w in rep.warnings[:10]:
        warn(w)
    if len(rep.warnings) > 10:
        err.print(f"[yellow]warning:[/yellow] ... and {len(rep.warnings) - 10} more warnings")
    if rep.failures:
        err.print("failed files are kept in the index's failures (`speakerid index info` lists them)")
        report_failures(list(rep.failures), rep.files_embedded + rep.files_failed, "files")


def _run_indexer(fn, what: str, as_json: bool, check=None) -> None:
    """Run an indexer call under the progress bar, print its summary (``check(report)`` may
    raise first) and exit 0, or 1 when some files failed; Ctrl-C reports what was saved and
    exits 130."""
    from ..indexer import BuildInterrupted

    bar = RichProgress(err)
    try:
        with bar:
            rep = fn(bar)
    except BuildInterrupted as exc:
        bar.stop()
        _report_build(exc.report, what, as_json)
        err.print("interrupted: finished files are saved; run the same command again to finish")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if check is not None:
        check(rep)
    _report_build(rep, what, as_json)
    finish(EXIT_SOME_FAILED if rep.files_failed else EXIT_OK)


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
    as_json: bool = JSON_OPT,
) -> None:
    """Embed a corpus into the index; clips already indexed (same content) are skipped.

    An interrupted build (Ctrl-C, kill) resumes where it stopped when run again."""
    from ..indexer import build_index

    if index_type is not None and index_type not in ("flat", "hnsw", "ivf"):
        raise CliError(f"--index-type must be flat, hnsw or ivf, got {index_type!r}")
    if checkpoint_every <= 0:
        raise CliError(f"--checkpoint-every must be positive, got {checkpoint_every}")
    _run_indexer(lambda bar: build_index(speakers_dir, index_dir, model=model, index_type=index_type,  # type: ignore[arg-type]
                                         workers=workers, progress=bar, checkpoint_every_s=checkpoint_every,
                                         wait_s=wait), "indexed", as_json)


@index_app.command("add")
def index_add(
    paths: list[Path] = typer.Argument(..., help="Clips or folders of one speaker (with --speaker), "
                                                 "else speakers folders / manifests as for `index build`."),
    speaker: str | None = typer.Option(None, "--speaker", "-s", help="Speaker of all the clips given."),
    index_dir: Path = INDEX_DIR_OPT,
    workers: int | None = WORKERS_OPT,
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
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
    _run_indexer(lambda bar: add_files(index_dir, items, workers=workers, progress=bar, wait_s=wait),
                 "added", as_json)


@index_app.command("remove")
def index_remove(
    speaker: str = typer.Argument(..., help="Speaker to remove (every clip of it)."),
    index_dir: Path = INDEX_DIR_OPT,
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Remove a speaker from the index and recalibrate the open-set threshold."""
    from ..index import SpeakerIndex
    from ..indexer import remove_speaker

    n = remove_speaker(index_dir, speaker, wait_s=wait)
    ix = SpeakerIndex.open(index_dir, verify=False)
    if as_json:
        print_json({"path": str(ix.path), "removed": speaker, "clips": n, "speakers": len(ix.speakers()),
                    "version": ix.version, "threshold": ix.threshold, "threshold_method": ix.threshold_method})
        return
    thr = "none" if ix.threshold is None else f"{ix.threshold:.3f}"
    out.print(f"removed {speaker} ({n} clips); {len(ix.speakers())} speakers left, threshold {thr}")


def _info_rows(info: dict, audio_s: float) -> list[tuple[str, str]]:
    thr = "none" if info["threshold"] is None else f"{info['threshold']:.3f} ({info['threshold_method']})"
    return [
        ("index", f"{info['path']} (version {info['version']})"),
        ("model", f"{info['model']} ({info['dim']}-d, weights {info['weights_sha256'][:12]}…)"),
        ("type", f"{info['index_type']} ({info['faiss_index']})"),
        ("speakers", str(info["speakers"])),
        ("clips", f"{info['utterances']} ({audio_s / 3600:.2f} h of audio)"),
        ("failures", str(info["failures"])),
        ("threshold", thr),
        ("basis", info["threshold_basis"] or "not recorded"),
        ("size", f"{info['bytes_on_disk'] / 1e6:.2f} MB"),
        ("updated", str(info["updated_at"])),
    ]


@index_app.command("info")
def index_info(index_dir: Path = INDEX_DIR_OPT, as_json: bool = JSON_OPT) -> None:
    """Counts, model, size on disk, threshold (and what it rests on) and failed files of an index."""
    from ..index import SpeakerIndex

    ix = SpeakerIndex.open(index_dir)
    info = ix.info()
    fails = ix.failures().to_pylist()
    audio_s = float(sum(ix.utterances()["duration_s"].to_pylist()))
    if as_json:
        info.update(audio_s=round(audio_s, 3),
                    failed_files=[{"path": f["path"], "error": f["error"], "at": f["at"].isoformat()} for f in fails])
        print_json(info)
        return
    for k, v in _info_rows(info, audio_s):
        out.print(f"{k:<10} {v}", markup=False)
    for w in info["threshold_warnings"]:
        out.print(f"  threshold warning: {w}", markup=False)
    for a, b, cos in info["near_duplicate_speakers"][:10]:
        out.print(f"  near-duplicate speakers: {a} ~ {b} (centroid cosine {cos:.3f})", markup=False)
    if len(info["near_duplicate_speakers"]) > 10:
        out.print(f"  ... and {len(info['near_duplicate_speakers']) - 10} more near-duplicate pairs (--json lists them all)")
    for f in fails[:10]:
        out.print(f"  failed: {f['path']}: {f['error']}", markup=False)
    if len(fails) > 10:
        out.print(f"  ... and {len(fails) - 10} more (--json lists them all)")


@index_app.command("verify")
def index_verify(index_dir: Path = INDEX_DIR_OPT, as_json: bool = JSON_OPT) -> None:
    """Check every version of the index on disk (every file's hash, counts, ids).

    Exits 0 when every version is intact, 1 when damage was found (each problem is listed)."""
    from ..index import verify_index

    report = verify_index(index_dir)
    if as_json:
        print_json(report.to_dict())
    else:
        for v in report.versions:
            mark = "current" if v.current else ""
            state = (f"intact: {v.utterances} clips, {v.speakers} speakers, updated {v.updated_at}" if v.intact
                     else f"DAMAGED: {v.problem}")
            out.print(f"v{v.version:06d} {mark:<7} {state}", markup=False, soft_wrap=True)
        if report.pointer_problem is not None:
            out.print(f"pointer: {report.pointer_problem}", markup=False, soft_wrap=True)
        for name in report.leftovers:
            out.print(f"leftover of an interrupted save (the next save deletes it): {name}", markup=False)
        if report.problems and report.rollback_to is not None:
            out.print(f"roll back to the intact version {report.rollback_to} with "
                      f"`speakerid index rollback -i {index_dir}`", markup=False, soft_wrap=True)
        elif not report.problems:
            out.print(f"{index_dir}: every version is intact", markup=False)
    if report.problems:  # the damage found, listed on stderr whatever the output format
        err.print(f"{len(report.problems)} problem{'s' if len(report.problems) > 1 else ''} found:", markup=False)
        for problem in report.problems:
            err.print(f"  {problem}", markup=False, soft_wrap=True)
    finish(EXIT_SOME_FAILED if report.problems else EXIT_OK)


@index_app.command("rollback")
def index_rollback(
    index_dir: Path = INDEX_DIR_OPT,
    to: int | None = typer.Option(None, "--to", help="Version to switch to (default: the newest intact "
                                                      "version older than the current one)."),
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Point the index back at an intact earlier version (undoes the last save, or leaves a
    damaged one). No version is deleted: the next save collects the abandoned one."""
    from ..index import current_version, rollback

    previous = current_version(index_dir)
    now = rollback(index_dir, to_version=to, wait_s=wait)
    if as_json:
        print_json({"path": str(index_dir), "previous": previous, "current": now})
        return
    was = "an unreadable pointer" if previous is None else f"version {previous}"
    out.print(f"{index_dir}: rolled back from {was} to version {now}", markup=False)


@app.command()
def enroll(
    speaker: str = typer.Argument(..., help="Name of the speaker."),
    clips: list[Path] = typer.Argument(..., help="Clips of that speaker (folders walked recursively)."),
    index_dir: Path = INDEX_DIR_OPT,
    model: str | None = typer.Option(None, "--model", "-m", help="Model of a new index (default campplus)."),
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
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

    _run_indexer(lambda bar: add_files(index_dir, items, model=model, progress=bar, wait_s=wait),
                 "enrolled", as_json, check)
