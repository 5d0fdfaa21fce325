"""`speakerid identify` and `speakerid demo`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from ..errors import SpeakeridError
from ._common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    INDEX_DIR_OPT,
    CliError,
    app,
    err,
    expand_inputs,
    finish,
    out,
    print_json,
    report_failures,
    threshold_arg,
    warn,
)
from ._progress import RichProgress

# --- identify / demo -------------------------------------------------------------------------

DEFAULT_INDEX = Path("index/default")
RESULT_FORMATS = (".jsonl", ".csv", ".parquet")


def _identify_setup(index_dir: Path, model: str | None, workers: int):
    """The index (read-only, not empty) and an Embedder of its own model."""
    from ..config import EmbedOptions
    from ..errors import EmptyGalleryError
    from ..index import open_with_embedder

    ix, emb = open_with_embedder(index_dir, model=model, embed=EmbedOptions(threads=1 if workers > 1 else None))
    if len(ix) == 0:
        raise EmptyGalleryError(f"the index at {index_dir} holds no speakers: enrol some first")
    return ix, emb


def _embed_in_order(emb, files: list[Path], workers: int, check=None):
    """(path, Embedding or SpeakeridError, SpeakerCount or None) in input order, each yielded as
    soon as it and every earlier clip are done; at most a few clips per worker are in flight.
    ``check`` (a speakerid.multispeaker.SpeakerCheck) counts the voices of each embedded clip."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def one(p: Path):
        try:
            e = emb.embed_detailed(p)
        except SpeakeridError as exc:
            return exc, None
        try:
            return e, None if check is None else check(p)
        except SpeakeridError:  # the clip embedded: a check that cannot run leaves it unflagged
            return e, None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque = deque()
        for p in files:
            pending.append((p, pool.submit(one, p)))
            if len(pending) >= 4 * max(1, workers):
                q, fut = pending.popleft()
                yield (q, *fut.result())
        while pending:
            q, fut = pending.popleft()
            yield (q, *fut.result())


def _flag_voices(row: dict, voices) -> None:
    """identify's multi-speaker flag: ``multi_speaker`` (None: not checked) and its warning."""
    row["multi_speaker"] = None if voices is None or voices.speakers is None else voices.multi_speaker
    if voices is not None and voices.multi_speaker:
        row["warnings"].append(voices.warning())


def _result_row(path: Path, res, ident, model: str) -> dict:
    if ident is None:
        return {"clip": str(path), "verdict": "error", "speaker": None, "accepted": None, "score": None,
                "threshold": None, "threshold_method": None, "scoring": None, "model": model,
                "speech_s": None, "matches": [], "error": f"{type(res).__name__}: {res}", "warnings": []}
    return {"clip": str(path), "verdict": ident.speaker or "unknown", "speaker": ident.speaker,
            "accepted": ident.accepted, "score": ident.best.score if ident.best else None,
            "threshold": ident.threshold, "threshold_method": ident.threshold_method, "scoring": ident.scoring,
            "model": model, "speech_s": round(res.speech_s, 3),
            "matches": [{"rank": m.rank, "speaker": m.speaker, "score": m.score, "norm_score": m.norm_score}
                        for m in ident.matches],
            "error": None, "warnings": list(res.warnings), "score_norm": ident.score_norm,
            "norm_score": ident.best.norm_score if ident.best else None}


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

        match = pa.struct([("rank", pa.int32()), ("speaker", pa.string()), ("score", pa.float64()),
                           ("norm_score", pa.float64())])
        schema = pa.schema([("clip", pa.string()), ("verdict", pa.string()), ("speaker", pa.string()),
                            ("accepted", pa.bool_()), ("score", pa.float64()), ("threshold", pa.float64()),
                            ("threshold_method", pa.string()), ("scoring", pa.string()), ("model", pa.string()),
                            ("speech_s", pa.float64()), ("matches", pa.list_(match)), ("error", pa.string()),
                            ("warnings", pa.list_(pa.string())), ("score_norm", pa.string()),
                            ("norm_score", pa.float64()), ("multi_speaker", pa.bool_())])
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
    speaker_check: bool = typer.Option(True, "--speaker-check/--no-speaker-check",
                                       help="Flag clips in which several people talk (multi_speaker), "
                                            "by diarizing each clip (1.2-1.6x the cost of its embedding)."),
    score_norm: str = typer.Option(
        "default", "--score-norm",
        help="none (raw cosine) or asnorm (AS-norm against the other enrolled speakers); default: the library's.",
    ),
    duration_aware: bool | None = typer.Option(
        None, "--duration-aware/--fixed-threshold",
        help="Threshold at each clip's speech seconds (needs an index calibrated with a duration model).",
    ),
) -> None:
    """Who is speaking in each clip? The top-k enrolled identities and a verdict (or `unknown`)."""
    from ..identify import DEFAULT_SCORE_NORM, DURATION_AWARE_DEFAULT, SCORE_NORMS
    from ..identify import identify as run_identify

    threshold = threshold_arg(threshold)
    if score_norm == "default":
        score_norm = DEFAULT_SCORE_NORM
    if duration_aware is None:
        duration_aware = DURATION_AWARE_DEFAULT
    if score_norm not in SCORE_NORMS:
        raise CliError(f"--score-norm must be one of {', '.join(SCORE_NORMS)}, got {score_norm!r}")
    if k < 1:
        raise CliError(f"-k must be at least 1, got {k}")
    if workers < 1:
        raise CliError(f"--workers must be at least 1, got {workers}")
    files = expand_inputs(clips)
    sink = _ResultFile(out_file) if out_file is not None else None
    ix, emb = _identify_setup(index_dir, model, workers)
    if threshold is None and ix.threshold is None:
        warn(f"the index has no threshold; using the {emb.model} verification threshold")
    if not as_json:
        thr = threshold if threshold is not None else ix.threshold
        how = "given" if threshold is not None else (ix.threshold_method or "model default")
        out.print(f"index {index_dir}: {len(ix.speakers())} speakers, {len(ix)} clips, model {emb.model}, "
                  f"threshold {thr if thr is None else f'{thr:.3f}'} ({how}), scores {score_norm}")
    clip_w = min(48, max(4, *(len(str(p)) for p in files)))
    verdict_w = min(24, max(7, *(len(s) for s in ix.speakers())))
    failures: list[tuple[str, str]] = []
    try:
        check = None
        if speaker_check:
            from ..multispeaker import SpeakerCheck

            check = SpeakerCheck()
        for n, (path, res, voices) in enumerate(_embed_in_order(emb, files, workers, check)):
            ident = None if isinstance(res, SpeakeridError) else run_identify(
                ix, res.vector, k, threshold, score_norm=score_norm,
                query_speech_s=res.speech_s if duration_aware else None)[0]
            row = _result_row(path, res, ident, emb.model)
            _flag_voices(row, voices)
            if ident is None:
                failures.append((str(path), row["error"]))
            for w in row["warnings"]:
                warn(f"{path}: {w}")
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
    report_failures(failures, len(files))
    finish(EXIT_SOME_FAILED if failures else EXIT_OK)


def _build_demo_index(speakers_dir: Path, index_dir: Path):
    """The demo gallery, built (or brought up to date) by the corpus indexer, and its embedder."""
    from ..index import open_with_embedder
    from ..indexer import build_index
    from ..models import store

    with RichProgress(err) as bar:  # the first run downloads and converts it: show it
        store.pull("campplus", progress=bar)
    build_index(speakers_dir, index_dir, model="campplus")
    return open_with_embedder(index_dir)


@app.command()
def demo(
    workdir: Path = typer.Option(Path("index"), "--workdir", help="Where the demo corpus and index go."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the verdicts) instead of the table."),
) -> None:
    """Enrol four synthetic voices, then identify held-out sentences and a voice never enrolled."""
    from ..demo import ENROLLED_VOICES, UNKNOWN_VOICES, make_corpus
    from ..identify import identify as run_identify

    err.print("synthesising the demo voices with flite and festival (text-to-speech, not real people)…")
    corpus = make_corpus(workdir / "demo-corpus")
    err.print(f"building the demo index in {workdir / 'demo'}…")
    ix, emb = _build_demo_index(corpus.speakers_dir, workdir / "demo")
    rows = []
    for path, truth in corpus.queries:
        ident = run_identify(ix, emb.embed(path), 3)[0]
        rows.append({"clip": path.name, "truth": truth, "verdict": ident.speaker,
                     "score": ident.best.score if ident.best else None, "threshold": ident.threshold,
                     "correct": ident.speaker == truth})
    right = sum(r["correct"] for r in rows)
    if as_json:
        print_json({"index": str(ix.path), "model": ix.spec.model, "enrolled": list(ENROLLED_VOICES),
                    "not_enrolled": list(UNKNOWN_VOICES), "threshold_method": ix.threshold_method,
                    "correct": right, "queries": rows})
        return
    _demo_table(rows, ix.spec.model, len(ENROLLED_VOICES), UNKNOWN_VOICES)
    out.print(f"{right} of {len(rows)} correct; threshold: {ix.threshold_method}")


def _demo_table(rows: list[dict], model: str, n_enrolled: int, unknown) -> None:
    from rich.table import Table

    table = Table(title=f"speakerid demo: {n_enrolled} enrolled voices, {model}",
                  caption="All voices are synthetic (flite / festival text-to-speech), not recordings of people. "
                          f"{', '.join(unknown)} is not enrolled: the right verdict for it is unknown.")
    for col in ("clip", "true speaker", "verdict", "score", "threshold", "correct?"):
        table.add_column(col, justify="right" if col in ("score", "threshold") else "left")
    for r in rows:
        table.add_row(r["clip"], r["truth"] or f"{r['clip'].split('-')[0]} (not enrolled)", r["verdict"] or "unknown",
                      "" if r["score"] is None else f"{r['score']:.3f}", f"{r['threshold']:.3f}",
                      "[green]yes[/green]" if r["correct"] else "[red]no[/red]")
    out.print(table)
