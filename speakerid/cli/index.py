"""`speakerid index build|add|remove|info|verify|rollback|compact|upgrade` and `speakerid enroll`.

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
    engine: str = typer.Option("local", "--engine", help="local (threads) | ray (a Ray Data actor pool; "
                                                         "pip install 'speakerid[ray]')."),
    address: str | None = typer.Option(None, "--address", help="With --engine ray: the cluster (auto, "
                                       "ray://host:10001; default: a local Ray of --workers CPUs)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Embed a corpus into the index; clips already indexed (same content) are skipped.

    An interrupted build (Ctrl-C, kill) resumes where it stopped when run again."""
    from ..indexer import build_index

    if index_type is not None and index_type not in ("flat", "hnsw", "ivf"):
        raise CliError(f"--index-type must be flat, hnsw or ivf, got {index_type!r}")
    if checkpoint_every <= 0:
        raise CliError(f"--checkpoint-every must be positive, got {checkpoint_every}")
    if engine not in ("local", "ray"):
        raise CliError(f"--engine must be local or ray, got {engine!r}")
    if address is not None and engine != "ray":
        raise CliError("--address needs --engine ray")
    if engine == "ray":
        from ..indexer.ray_engine import build_index_ray

        _run_indexer(lambda bar: build_index_ray(speakers_dir, index_dir, model=model, index_type=index_type,  # type: ignore[arg-type]
                                                 address=address, num_cpus=workers, progress=bar,
                                                 checkpoint_every_s=checkpoint_every, wait_s=wait),
                     "indexed", as_json)
        return
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
        ("basis", (info["threshold_basis"] or "not recorded")
         + (f"; {info['threshold_changed_speakers']} speakers changed since (recalibrated at 1 %)"
            if info.get("threshold_changed_speakers") else "")),
        ("size", f"{info['bytes_on_disk'] / 1e6:.2f} MB"),
        ("storage", f"format {info.get('format_version')}, {info.get('segments')} segments, "
                    f"{info.get('dead_rows')} removed clips not compacted yet"),
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


@index_app.command("compact")
def index_compact(index_dir: Path = INDEX_DIR_OPT, wait: float = WAIT_OPT, as_json: bool = JSON_OPT) -> None:
    """Merge the index's segments into one, drop removed speakers' clips and rebuild the stored
    centroid index, as a new version (saves also compact by themselves above a threshold)."""
    from ..index import SpeakerIndex

    with SpeakerIndex.open(index_dir, writable=True, wait_s=wait) as ix:
        done = ix.compact()
    if as_json:
        print_json({"path": str(index_dir), **done})
        return
    out.print(f"{index_dir}: {done['segments_before']} segments compacted into {done['segments_after']}, "
              f"{done['dead_rows_dropped']} removed clips dropped (version {done['version']})", markup=False)


@index_app.command("upgrade")
def index_upgrade(index_dir: Path = INDEX_DIR_OPT, wait: float = WAIT_OPT, as_json: bool = JSON_OPT) -> None:
    """Convert a format-1 index (one whole copy per version) to format 2 (segments); a no-op
    for a format-2 index. The old version stays on disk as the previous one (rollback works)."""
    from ..index import FORMAT_VERSION, SpeakerIndex

    was = SpeakerIndex.upgrade(index_dir, wait_s=wait)
    if as_json:
        print_json({"path": str(index_dir), "format_before": was, "format": FORMAT_VERSION})
        return
    what = "already in" if was == FORMAT_VERSION else f"converted from format {was} to"
    out.print(f"{index_dir}: {what} format {FORMAT_VERSION}", markup=False)


@app.command()
def enroll(
    speaker: str = typer.Argument(..., help="Name of the speaker."),
    clips: list[Path] | None = typer.Argument(None, help="Clips of that speaker (folders walked recursively); "
                                                         "with --from-timeline, the recording (default: the "
                                                         "one the timeline names)."),
    index_dir: Path = INDEX_DIR_OPT,
    model: str | None = typer.Option(None, "--model", "-m", help="Model of a new index (default campplus)."),
    from_timeline: Path | None = typer.Option(None, "--from-timeline", help="A `speakerid diarize --json` "
                                              "output: enrol the solo turns of --label in it."),
    label: str | None = typer.Option(None, "--label", help="With --from-timeline: the speaker label to enrol "
                                     "(e.g. unknown-2)."),
    keep_clips: Path | None = typer.Option(None, "--keep-clips", help="With --from-timeline: write the clips "
                                           "cut from the recording here (default: a temporary folder)."),
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Enrol a speaker from a few clips (the index is created if missing), or from a diarized
    recording: `speakerid enroll alice --from-timeline out.json --label unknown-2`.

    Exits 2 when no clip could be embedded, 1 when some failed."""
    from ..indexer import Item, add_files

    if not speaker.strip():
        raise CliError("the speaker name must not be empty")
    if from_timeline is not None:
        _enroll_from_timeline(speaker.strip(), from_timeline, label, clips or [], index_dir, model, keep_clips,
                              wait, as_json)
        return
    if label is not None or keep_clips is not None:
        raise CliError("--label and --keep-clips go with --from-timeline")
    if not clips:
        raise CliError("give the clips to enrol (or --from-timeline OUT.json --label LABEL)")
    items = [Item(p, speaker.strip()) for p in expand_inputs(clips)]

    def check(rep) -> None:
        if rep.files_embedded + rep.files_skipped_known + rep.files_duplicate == 0:
            raise CliError(f"no clip of {speaker} could be embedded (first error: {rep.failures[0][1]})")

    _run_indexer(lambda bar: add_files(index_dir, items, model=model, progress=bar, wait_s=wait),
                 "enrolled", as_json, check)


def _timeline_record(path: Path, audio: Path | None) -> dict:
    """The one recording's record of a `diarize --json` output (``{"files": [...]}`` for several
    recordings: the one of ``audio``)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"--from-timeline {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"--from-timeline {path}: not a diarize --json output ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("files", data.get("turns")), list):
        raise CliError(f"--from-timeline {path}: not a diarize --json output (no turns)")
    if "files" not in data:
        return data
    records = [r for r in data["files"] if isinstance(r, dict)]
    if audio is not None:
        records = [r for r in records if r.get("file") in (str(audio), audio.name)
                   or Path(str(r.get("file", ""))).name == audio.name] or records
    if len(records) != 1:
        raise CliError(f"--from-timeline {path} holds {len(records)} recordings: name the one to enrol from "
                       "as AUDIO")
    return records[0]


def _timeline_audio(record: dict, timeline_path: Path, given: Path | None) -> Path:
    """The recording: as given, else as the timeline names it (relative to the working
    directory, then to the timeline's folder)."""
    if given is not None:
        if not given.is_file():
            raise CliError(f"{given}: no such audio file")
        return given
    named = str(record.get("file") or record.get("source") or "")
    if not named or named.startswith("<"):
        raise CliError(f"--from-timeline {timeline_path} does not name its recording: give it as AUDIO")
    for candidate in (Path(named), timeline_path.parent / named):
        if candidate.is_file():
            return candidate
    raise CliError(f"the recording {named} of the timeline is missing: give its path as AUDIO")


def _enroll_from_timeline(name: str, timeline_path: Path, label: str | None, paths: list[Path], index_dir: Path,
                          model: str | None, keep_clips: Path | None, wait: float, as_json: bool) -> None:
    from ..diarize import Timeline, enroll_from_timeline
    from ..diarize.enroll import MIN_PIECE_S
    from ..diarize.pipeline import MODEL as DIARIZE_MODEL
    from ..errors import ModelMismatchError

    if label is None or not label.strip():
        raise CliError("--from-timeline needs --label (the speaker of the timeline to enrol, e.g. unknown-2)")
    if len(paths) > 1:
        raise CliError("--from-timeline takes at most one recording (AUDIO)")
    if model is not None and model != DIARIZE_MODEL:
        raise ModelMismatchError(f"diarization names speakers with {DIARIZE_MODEL}: enrolling from a timeline "
                                 f"into a {model} index would never name them")
    record = _timeline_record(timeline_path, paths[0] if paths else None)
    timeline = Timeline.from_dict(record)
    label = label.strip()
    if label not in timeline.labels():
        raise CliError(f"no speaker {label!r} in {timeline_path} (speakers: {', '.join(timeline.labels()) or 'none'})")
    solo_s = sum(e - s for s, e in timeline.solo_turns(label) if e - s >= MIN_PIECE_S)
    if solo_s <= 0:
        raise CliError(f"{label} never talks alone for {MIN_PIECE_S} s in {timeline_path}: nothing to enrol")
    audio = _timeline_audio(record, timeline_path, paths[0] if paths else None)
    _check_diarize_model(index_dir, DIARIZE_MODEL)  # before cutting anything
    if not as_json:
        err.print(f"enrolling {solo_s:.1f} s of {label}'s solo speech in {audio} as {name}", markup=False)
    _run_indexer(lambda bar: enroll_from_timeline(index_dir, timeline, label, name, audio, clips_dir=keep_clips,
                                                  model=DIARIZE_MODEL, progress=bar, wait_s=wait),
                 "enrolled", as_json)


def _check_diarize_model(index_dir: Path, model: str) -> None:
    """An existing index must be of the diarization's encoder (else its names never match)."""
    from ..errors import IndexNotFoundError, ModelMismatchError
    from ..index import SpeakerIndex

    try:
        spec = SpeakerIndex.open(index_dir, verify=False).spec
    except IndexNotFoundError:
        return  # created with the diarization's model
    if spec.model != model:
        raise ModelMismatchError(f"the index at {index_dir} was built with {spec.model}, but diarization names "
                                 f"speakers with {model}: enrol into a {model} index")
