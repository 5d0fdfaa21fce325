"""The ``speakerid`` command line.

Exit codes, the same for every command:

- 0: everything asked for was done;
- 1: the command ran to the end but some inputs failed (each is listed on stderr and kept in
  the output: the ``error`` column, the index's failures);
- 2: a usage or input error stopped the command (bad option, unreadable clip for ``verify``,
  model mismatch, index locked...): one line ``error: ...`` on stderr;
- 130: interrupted (what was finished is kept).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from .corpus import audio_files_under
from .errors import SpeakeridError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Speaker verification and identification.")
models_app = typer.Typer(no_args_is_help=True, help="List, pull, inspect and add speaker models.")
app.add_typer(models_app, name="models")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks on VoxCeleb1 protocols (verification, identification).")
app.add_typer(bench_app, name="bench")

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
        from . import __version__

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


def _threshold(value: float | None, flag: str = "--threshold") -> float | None:
    from .config import check_threshold

    return None if value is None else check_threshold(value, flag)


def _report_failures(failures: list[tuple[str, str]], total: int, what: str = "clips") -> None:
    """List failed inputs on stderr (the first 10, then a count)."""
    if not failures:
        return
    err.print(f"{len(failures)} of {total} {what} failed:", markup=False)
    for path, error in failures[:10]:
        err.print(f"  {path}: {error}", markup=False, soft_wrap=True)
    if len(failures) > 10:
        err.print(f"  ... and {len(failures) - 10} more")


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {rich_escape(message)}", soft_wrap=True)


class CliError(SpeakeridError):
    """A usage problem found by the CLI itself."""


def _progress_line(message: str) -> None:
    err.print(f"[dim]speakerid:[/dim] {message}")


def _embedder(model: str, no_vad: bool, threads: int | None = None, min_speech_ms: float | None = None):
    from .config import EmbedOptions, VadOptions
    from .embedder import Embedder

    vad = VadOptions(enabled=not no_vad, **({"min_speech_ms": min_speech_ms} if min_speech_ms is not None else {}))
    return Embedder(model, vad=vad, embed=EmbedOptions(threads=threads), progress=_progress_line)


#: verify and the like say what they are doing when the audio is longer than this.
LONG_AUDIO_S = 60.0


def _say_long_audio(files: list[Path]) -> None:
    """One line before embedding clips long enough to take a while (verify is silent otherwise)."""
    from . import audio

    total = 0.0
    for f in files:
        try:
            total += audio.probe(f).duration_s
        except SpeakeridError:
            return  # the embedding itself reports the problem
    if total > LONG_AUDIO_S:
        _progress_line(f"embedding {len(files)} clips ({total / 60:.1f} min of audio)…")


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


@app.command()
def verify(
    a: Path = typer.Argument(..., help="First clip."),
    b: Path = typer.Argument(..., help="Second clip."),
    model: str = MODEL_OPT,
    threshold: float | None = typer.Option(None, help="Cosine threshold (default: the model's calibrated one)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    no_vad: bool = typer.Option(False, "--no-vad", help="Embed the whole clips, silence included."),
) -> None:
    """Are A and B the same speaker? Prints the cosine similarity and match/unmatch."""
    from .verify import verify as run_verify

    threshold = _threshold(threshold)
    _say_long_audio([a, b])
    res = run_verify(a, b, embedder=_embedder(model, no_vad), threshold=threshold)
    warnings = [f"{e.source}: {w}" for e in (res.a, res.b) for w in e.warnings]
    for w in warnings:
        _warn(w)
    if as_json:
        print_json({
            "a": str(a), "b": str(b), "model": res.model, "similarity": round(res.score, 6),
            "threshold": res.threshold, "match": res.match,
            "speech_s": [round(res.a.speech_s, 3), round(res.b.speech_s, 3)], "warnings": warnings,
        })
        return
    out.print(f"similar: {res.score:.8f}")
    out.print(f"verification: {'match' if res.match else 'unmatch'} (threshold: {res.threshold:.3f}, model: {res.model})")


@app.command()
def embed(
    paths: list[Path] = typer.Argument(..., help="Audio files or directories (walked recursively)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Parquet file to write."),
    model: str = MODEL_OPT,
    workers: int = typer.Option(os.cpu_count() or 1, help="Clips embedded at once."),
    no_vad: bool = typer.Option(False, "--no-vad", help="Embed the whole clips, silence included."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (rows, failures, warnings)."),
) -> None:
    """Embed clips into a Parquet file: one row per input, failures in the error column.

    Exits 1 when some clips failed (they are listed, and kept as rows with an error)."""
    from .export import write_embeddings

    if workers < 1:
        raise CliError(f"--workers must be at least 1, got {workers}")
    files = expand_inputs(paths)
    emb = _embedder(model, no_vad, threads=1 if workers > 1 else None)
    summary = write_embeddings(files, out_file, emb, workers=workers, console=err)
    for path, w in summary["warnings"]:
        _warn(f"{path}: {w}")
    if as_json:
        print_json({"out": str(out_file), "rows": summary["rows"], "failed": summary["failed"],
                    "audio_s": round(summary["audio_s"], 3),
                    "failures": [{"path": p, "error": e} for p, e in summary["failures"]],
                    "warnings": [{"path": p, "warning": w} for p, w in summary["warnings"]]})
    else:
        err.print(f"wrote {summary['rows']} rows to {out_file} ({summary['failed']} failed)", markup=False,
                  soft_wrap=True)
    _report_failures(summary["failures"], summary["rows"])
    _finish(EXIT_SOME_FAILED if summary["failed"] else EXIT_OK)


@models_app.command("list")
def models_list() -> None:
    """Models by name, and whether each is cached."""
    from .models import store

    for name in store.available_models():
        i = store.info(name)
        state = "cached" if i["cached"] else "not pulled"
        desc = i.get("description") or i.get("spec", {}).get("description", "")
        out.print(f"{name:<12} {state:<11} {desc}")


@models_app.command("pull")
def models_pull(name: str = typer.Argument(...), force: bool = typer.Option(False, help="Convert again.")) -> None:
    """Download, verify and convert a model into the cache."""
    from .models import store

    spec = store.pull(name, force=force, progress=_progress_line)
    out.print(f"{spec.name}: {spec.dim}-d, front end {spec.frontend}, weights sha256 {spec.weights_sha256[:16]}…")


@models_app.command("info")
def models_info(name: str = typer.Argument(...)) -> None:
    """Everything known about a model, as JSON."""
    from .models import store

    out.print_json(json.dumps(store.info(name), default=str))


@models_app.command("add")
def models_add(
    name: str = typer.Argument(..., help="Name to give the model."),
    onnx_file: Path = typer.Option(..., "--onnx", help="ONNX speaker encoder."),
    frontend: str = typer.Option(..., help="autospeech | fbank"),
    mean: Path | None = typer.Option(None, help="Feature mean .npy (autospeech)."),
    std: Path | None = typer.Option(None, help="Feature std .npy (autospeech)."),
    config: Path | None = typer.Option(None, help="yaml with front-end options and model io (fbank)."),
    threshold: float | None = typer.Option(None, help="Default verification threshold."),
) -> None:
    """Add your own ONNX encoder (e.g. AutoSpeech's proposed_veri.onnx, a WeSpeaker export)."""
    from .models.user import add_model

    threshold = _threshold(threshold)
    spec = add_model(name, onnx_file, frontend=frontend, mean=mean, std=std, config=config, threshold=threshold)
    out.print(f"added {spec.name}: {spec.dim}-d, front end {spec.frontend}, sha256 {spec.weights_sha256[:16]}…")


# --- index build / add / remove / info, enroll ----------------------------------------------

index_app = typer.Typer(no_args_is_help=True, help="Build and maintain a speaker index (the gallery).")
app.add_typer(index_app, name="index")
INDEX_DIR_OPT = typer.Option(Path("index/default"), "--index", "-i", help="Speaker index directory.")
WORKERS_OPT = typer.Option(None, "--workers", "-w", help="Clips processed at once, in threads (default: all cores).")
WAIT_OPT = typer.Option(0.0, "--wait", help="Seconds to wait for another writer of the index (default: fail at once).")


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
        err.print(f"[yellow]warning:[/yellow] {rich_escape(w)}", soft_wrap=True)
    if len(rep.warnings) > 10:
        err.print(f"[yellow]warning:[/yellow] ... and {len(rep.warnings) - 10} more warnings")
    if rep.failures:
        err.print("failed files are kept in the index's failures (`speakerid index info` lists them)")
        _report_failures(list(rep.failures), rep.files_embedded + rep.files_failed, "files")


def _run_indexer(fn, what: str = "indexed", check=None):
    """Run an indexer call with a progress bar and print its summary (``check(report)`` may
    raise first); Ctrl-C reports what was saved and exits 130."""
    from .indexer import BuildInterrupted

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


def _finish(code: int) -> None:
    """End a command with ``code`` (a return value would be lost under typer's standalone mode)."""
    if code != EXIT_OK:
        raise typer.Exit(code)


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
    from .indexer import build_index

    if index_type is not None and index_type not in ("flat", "hnsw", "ivf"):
        raise CliError(f"--index-type must be flat, hnsw or ivf, got {index_type!r}")
    if checkpoint_every <= 0:
        raise CliError(f"--checkpoint-every must be positive, got {checkpoint_every}")
    _finish(_exit_code(_run_indexer(lambda bar: build_index(speakers_dir, index_dir, model=model, index_type=index_type,  # type: ignore[arg-type]
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
    from .indexer import Item, add_files, discover

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
        err.print(f"[yellow]warning:[/yellow] {rich_escape(w)}", soft_wrap=True)
    _finish(_exit_code(_run_indexer(lambda bar: add_files(index_dir, items, workers=workers, progress=bar,
                                                          wait_s=wait), "added")))


@index_app.command("remove")
def index_remove(
    speaker: str = typer.Argument(..., help="Speaker to remove (every clip of it)."),
    index_dir: Path = INDEX_DIR_OPT,
    wait: float = WAIT_OPT,
) -> None:
    """Remove a speaker from the index and recalibrate the open-set threshold."""
    from .index import SpeakerIndex
    from .indexer import remove_speaker

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
    from .index import SpeakerIndex

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
    from .indexer import Item, add_files

    if not speaker.strip():
        raise CliError("the speaker name must not be empty")
    items = [Item(p, speaker.strip()) for p in expand_inputs(clips)]
    def check(rep) -> None:
        if rep.files_embedded + rep.files_skipped_known + rep.files_duplicate == 0:
            raise CliError(f"no clip of {speaker} could be embedded (first error: {rep.failures[0][1]})")

    _finish(_exit_code(_run_indexer(lambda bar: add_files(index_dir, items, model=model, progress=bar,
                                                          wait_s=wait), "enrolled", check)))


# --- identify / demo -------------------------------------------------------------------------

DEFAULT_INDEX = Path("index/default")
RESULT_FORMATS = (".jsonl", ".csv", ".parquet")


def _identify_setup(index_dir: Path, model: str | None, workers: int):
    """Open the index read-only and an Embedder of the index's own model (else refuse)."""
    from .errors import EmptyGalleryError, ModelMismatchError
    from .index import SpeakerIndex

    ix = SpeakerIndex.open(index_dir, model=model)
    if len(ix) == 0:
        raise EmptyGalleryError(f"the index at {index_dir} holds no speakers: enrol some first")
    emb = _embedder(ix.spec.model, False, threads=1 if workers > 1 else None)
    if emb.weights_sha256 != ix.spec.weights_sha256 or emb.dim != ix.dim:
        raise ModelMismatchError(
            f"index at {index_dir} was built with other {ix.spec.model} weights "
            f"({ix.spec.weights_sha256[:12]}…, dim {ix.dim}) than the cached model "
            f"({emb.weights_sha256[:12]}…, dim {emb.dim}); rebuild the index"
        )
    return ix, emb


def _embed_in_order(emb, files: list[Path], workers: int):
    """(path, Embedding or SpeakeridError) in input order, each yielded as soon as it and every
    earlier clip are done; at most a few clips per worker are in flight."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def one(p: Path):
        try:
            return emb.embed_detailed(p)
        except SpeakeridError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque = deque()
        for p in files:
            pending.append((p, pool.submit(one, p)))
            if len(pending) >= 4 * max(1, workers):
                q, fut = pending.popleft()
                yield q, fut.result()
        while pending:
            q, fut = pending.popleft()
            yield q, fut.result()


def _result_row(path: Path, res, ident, model: str) -> dict:
    if ident is None:
        return {"clip": str(path), "verdict": "error", "speaker": None, "accepted": None, "score": None,
                "threshold": None, "threshold_method": None, "scoring": None, "model": model,
                "speech_s": None, "matches": [], "error": f"{type(res).__name__}: {res}", "warnings": []}
    return {"clip": str(path), "verdict": ident.speaker or "unknown", "speaker": ident.speaker,
            "accepted": ident.accepted, "score": ident.best.score if ident.best else None,
            "threshold": ident.threshold, "threshold_method": ident.threshold_method, "scoring": ident.scoring,
            "model": model, "speech_s": round(res.speech_s, 3),
            "matches": [{"rank": m.rank, "speaker": m.speaker, "score": m.score} for m in ident.matches],
            "error": None, "warnings": list(res.warnings)}


class _ResultFile:
    """--out: rows streamed to .jsonl/.csv as they come; .parquet written (atomically) at the end."""

    def __init__(self, path: Path) -> None:
        self.path, self.kind = path, path.suffix.lower()
        if self.kind not in RESULT_FORMATS:
            raise CliError(f"--out {path}: use a .jsonl, .csv or .parquet file")
        if not path.parent.is_dir():
            raise CliError(f"--out {path}: directory {path.parent} does not exist")
        self.rows: list[dict] = []
        # results name people from their voices (biometric data): owner-only, like the index
        self._f = None
        if self.kind != ".parquet":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)
            self._f = open(fd, "w", newline="", encoding="utf-8")
        self._csv = None
        if self.kind == ".csv":
            import csv

            self._csv = csv.DictWriter(self._f, ["clip", "verdict", "accepted", "score", "threshold", "scoring",
                                                 "model", "speech_s", "matches", "error", "warnings"],
                                       extrasaction="ignore")
            self._csv.writeheader()

    def write(self, row: dict) -> None:
        if self._csv is not None:
            self._csv.writerow({**row, "matches": ";".join(f"{m['speaker']}:{m['score']:.4f}" for m in row["matches"]),
                                "warnings": "; ".join(row["warnings"])})
        elif self._f is not None:
            self._f.write(json.dumps(row, allow_nan=False) + "\n")
        else:
            self.rows.append(row)
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        match = pa.struct([("rank", pa.int32()), ("speaker", pa.string()), ("score", pa.float64())])
        schema = pa.schema([("clip", pa.string()), ("verdict", pa.string()), ("speaker", pa.string()),
                            ("accepted", pa.bool_()), ("score", pa.float64()), ("threshold", pa.float64()),
                            ("threshold_method", pa.string()), ("scoring", pa.string()), ("model", pa.string()),
                            ("speech_s", pa.float64()), ("matches", pa.list_(match)), ("error", pa.string()),
                            ("warnings", pa.list_(pa.string()))])
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
        os.chmod(tmp, 0o600)
        pq.write_table(pa.Table.from_pylist(self.rows, schema=schema), tmp)
        os.replace(tmp, self.path)


def _row_table(first: bool, clip_w: int, verdict_w: int, k: int):
    from rich.table import Table

    t = Table(box=None, show_header=first, header_style="bold underline", pad_edge=False)
    t.add_column("clip", width=clip_w, no_wrap=True, overflow="ellipsis")
    t.add_column("verdict", width=verdict_w, no_wrap=True, overflow="ellipsis")
    t.add_column("score", width=6, justify="right")
    t.add_column(f"top {k}", overflow="fold")
    return t


@app.command()
def identify(
    clips: list[Path] = typer.Argument(..., help="Audio files or directories (walked recursively)."),
    index_dir: Path = INDEX_DIR_OPT,
    k: int = typer.Option(5, "-k", "--top-k", help="Identities listed per clip."),
    threshold: float | None = typer.Option(None, help="Cosine threshold (default: the index's calibrated one)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per clip (JSON lines)."),
    out_file: Path | None = typer.Option(None, "--out", "-o", help="Also write results to FILE.jsonl|csv|parquet."),
    model: str | None = typer.Option(None, "--model", "-m", help="Refuse unless the index was built with this model."),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), help="Clips embedded at once."),
) -> None:
    """Who is speaking in each clip? The top-k enrolled identities and a verdict (or `unknown`)."""
    from .identify import identify as run_identify

    threshold = _threshold(threshold)
    if k < 1:
        raise CliError(f"-k must be at least 1, got {k}")
    if workers < 1:
        raise CliError(f"--workers must be at least 1, got {workers}")
    files = expand_inputs(clips)
    sink = _ResultFile(out_file) if out_file is not None else None
    ix, emb = _identify_setup(index_dir, model, workers)
    info = ix.info()
    if threshold is None and ix.threshold is None:
        err.print(f"[yellow]warning:[/yellow] the index has no threshold; using the {emb.model} verification threshold")
    if not as_json:
        thr = threshold if threshold is not None else info["threshold"]
        how = "given" if threshold is not None else (info["threshold_method"] or "model default")
        out.print(f"index {index_dir}: {info['speakers']} speakers, {info['utterances']} clips, model {emb.model}, "
                  f"threshold {thr if thr is None else f'{thr:.3f}'} ({how})")
    clip_w = min(48, max(4, *(len(str(p)) for p in files)))
    verdict_w = min(24, max(7, *(len(s) for s in ix.speakers())))
    failures: list[tuple[str, str]] = []
    try:
        for n, (path, res) in enumerate(_embed_in_order(emb, files, workers)):
            ident = None if isinstance(res, SpeakeridError) else run_identify(ix, res.vector, k, threshold)[0]
            row = _result_row(path, res, ident, emb.model)
            if ident is None:
                failures.append((str(path), row["error"]))
            for w in row["warnings"]:
                _warn(f"{path}: {w}")
            if sink is not None:
                sink.write(row)
            if as_json:
                sys.stdout.write(json.dumps(row, allow_nan=False) + "\n")
                sys.stdout.flush()
                continue
            t = _row_table(n == 0, clip_w, verdict_w, k)
            if ident is None:
                t.add_row(str(path), "[red]error[/red]", "", row["error"])
            else:
                verdict = f"[green]{ident.speaker}[/green]" if ident.accepted else "[yellow]unknown[/yellow]"
                best = f"{ident.best.score:.3f}" if ident.best else ""
                t.add_row(str(path), verdict, best, ", ".join(f"{m.speaker} {m.score:.3f}" for m in ident.matches))
            out.print(t)
    finally:
        if sink is not None:
            sink.close()
    _report_failures(failures, len(files))
    _finish(EXIT_SOME_FAILED if failures else EXIT_OK)


def _build_demo_index(speakers_dir: Path, index_dir: Path):
    """The demo gallery, built (or brought up to date) by the corpus indexer."""
    from .index import SpeakerIndex
    from .indexer import build_index
    from .models import store

    store.pull("campplus", progress=_progress_line)  # the first run downloads and converts it: say so
    build_index(speakers_dir, index_dir, model="campplus")
    return SpeakerIndex.open(index_dir)


@app.command()
def demo(
    workdir: Path = typer.Option(Path("index"), "--workdir", help="Where the demo corpus and index go."),
) -> None:
    """Enrol four synthetic voices, then identify held-out sentences and a voice never enrolled."""
    from rich.table import Table

    from .demo import ENROLLED_VOICES, UNKNOWN_VOICES, make_corpus
    from .identify import identify as run_identify

    err.print("synthesising the demo voices with flite and festival (text-to-speech, not real people)…")
    corpus = make_corpus(workdir / "demo-corpus")
    err.print(f"building the demo index in {workdir / 'demo'}…")
    ix = _build_demo_index(corpus.speakers_dir, workdir / "demo")
    emb = _embedder(ix.spec.model, False)
    table = Table(title=f"speakerid demo: {len(ENROLLED_VOICES)} enrolled voices, {ix.spec.model}",
                  caption="All voices are synthetic (flite / festival text-to-speech), not recordings of people. "
                          f"{', '.join(UNKNOWN_VOICES)} is not enrolled: the right verdict for it is unknown.")
    for col in ("clip", "true speaker", "verdict", "score", "threshold", "correct?"):
        table.add_column(col, justify="right" if col in ("score", "threshold") else "left")
    right = 0
    for path, truth in corpus.queries:
        ident = run_identify(ix, emb.embed(path), 3)[0]
        ok = ident.speaker == truth
        right += ok
        table.add_row(path.name, truth or f"{path.name.split('-')[0]} (not enrolled)",
                      ident.speaker or "unknown", f"{ident.best.score:.3f}" if ident.best else "",
                      f"{ident.threshold:.3f}", "[green]yes[/green]" if ok else "[red]no[/red]")
    out.print(table)
    out.print(f"{right} of {len(corpus.queries)} correct; threshold: {ix.info()['threshold_method']}")


def _bench_command_line() -> str:
    import shlex

    return "speakerid " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@bench_app.command("verify")
def bench_verify(
    root: Path = typer.Option(..., "--root", help="VoxCeleb1 wav root (holds id10001/...)."),
    trials: Path = typer.Option(..., "--trials", help="Trial list: 'label path path' lines (veri_test2.txt...)."),
    model: str = MODEL_OPT,
    out_dir: Path | None = typer.Option(None, "--out", help="Report directory (default bench-results/verify-LIST-MODEL)."),
    asnorm_cohort: Path | None = typer.Option(None, "--asnorm-cohort", help="Folder of other speakers' audio: adds AS-norm."),
    asnorm_top_n: int = typer.Option(300, "--asnorm-top-n", help="AS-norm: cohort scores averaged per side."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Clips embedded at once."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache root (default $SPEAKERID_HOME/embcache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Embed everything, read and write no cache."),
    no_vad: bool = typer.Option(False, "--no-vad", help="Embed the whole clips, silence included."),
) -> None:
    """Verification EER and minDCF (0.01, 0.05) on a VoxCeleb trial list; writes results.json, report.md, plots."""
    from .bench.console import verify_command

    verify_command(root=root, trials=trials, model=model, out=out_dir, asnorm_cohort=asnorm_cohort,
                   asnorm_top_n=asnorm_top_n, workers=workers, cache_dir=cache_dir, no_cache=no_cache,
                   no_vad=no_vad, command=_bench_command_line(), out_console=out, err_console=err)


@bench_app.command("identify")
def bench_identify(
    root: Path = typer.Option(..., "--root", help="VoxCeleb1 wav root (holds id10001/...)."),
    split: Path = typer.Option(..., "--split", help="iden_split.txt: '1|2|3 path' lines (1 enrols, 3 queries)."),
    model: str = MODEL_OPT,
    out_dir: Path | None = typer.Option(None, "--out", help="Report directory (default bench-results/identify-SPLIT-MODEL)."),
    scoring: str = typer.Option("centroid", help="Speaker scoring rule: centroid | best | topn."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Clips embedded at once."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache root (default $SPEAKERID_HOME/embcache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Embed everything, read and write no cache."),
    no_vad: bool = typer.Option(False, "--no-vad", help="Embed the whole clips, silence included."),
) -> None:
    """Closed-set top-1/top-5 and open-set FNIR at FPIR 1 % on a VoxCeleb identification split."""
    from .bench.console import identify_command

    identify_command(root=root, split=split, model=model, out=out_dir, scoring=scoring, workers=workers,
                     cache_dir=cache_dir, no_cache=no_cache, no_vad=no_vad, command=_bench_command_line(),
                     out_console=out, err_console=err)


def main() -> None:
    from typer.exceptions import TyperException

    try:
        rv = app(standalone_mode=False)
    except SpeakeridError as exc:
        # plain write: rich would wrap long messages (paths) at 80 columns and expand :emoji:
        message = " ".join(str(exc).splitlines())
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        sys.exit(2)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors (bad option, missing argument): one message
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    if isinstance(rv, int) and rv:
        sys.exit(rv)


if __name__ == "__main__":
    main()
