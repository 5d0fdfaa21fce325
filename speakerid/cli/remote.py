"""`speakerid remote verify|identify|enroll|diarize`: the same commands against a `speakerid serve`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ._common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
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

remote_app = typer.Typer(no_args_is_help=True, help="verify, identify, enroll and diarize against a speakerid server.")
app.add_typer(remote_app, name="remote")

URL_OPT = typer.Option("http://127.0.0.1:8000", "--url", envvar="SPEAKERID_URL", help="The server (env SPEAKERID_URL).")
KEY_OPT = typer.Option(None, "--api-key", envvar="SPEAKERID_API_KEY", show_default=False,
                       help="API key; prefer the env SPEAKERID_API_KEY (a command line is visible to other users).")


def _client(url: str, api_key: str | None):
    from ..client import Client

    return Client(url, api_key)


@remote_app.command("verify")
def remote_verify(
    a: Path = typer.Argument(..., help="First clip."),
    b: Path = typer.Argument(..., help="Second clip."),
    threshold: float | None = typer.Option(None, help="Cosine threshold (default: the server model's)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    url: str = URL_OPT,
    api_key: str | None = KEY_OPT,
) -> None:
    """Are A and B the same speaker? Asked of the server."""
    with _client(url, api_key) as c:
        res = c.verify(a, b, threshold_arg(threshold))
    if as_json:
        print_json({"a": str(a), "b": str(b), "model": res.model, "similarity": round(res.score, 6),
                    "threshold": res.threshold, "match": res.match, "speech_s": res.speech_s})
        return
    out.print(f"similar: {res.score:.8f}")
    out.print(f"verification: {'match' if res.match else 'unmatch'} (threshold: {res.threshold:.3f}, model: {res.model})")


@remote_app.command("identify")
def remote_identify(
    clips: list[Path] = typer.Argument(..., help="Audio files or directories (walked recursively)."),
    k: int = typer.Option(5, "-k", "--top-k", help="Identities listed per clip."),
    threshold: float | None = typer.Option(None, help="Cosine threshold (default: the index's calibrated one)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per clip (JSON lines)."),
    url: str = URL_OPT,
    api_key: str | None = KEY_OPT,
) -> None:
    """Who is speaking in each clip? Exits 1 when some clips failed (listed on stderr)."""
    from ..client import RemoteError

    threshold = threshold_arg(threshold)
    if k < 1:
        raise CliError(f"-k must be at least 1, got {k}")
    failures: list[tuple[str, str]] = []
    files = expand_inputs(clips)
    with _client(url, api_key) as c:
        for path in files:
            try:
                r = c.identify(path, k, threshold)
            except RemoteError as exc:
                if exc.code not in ("AUDIO_TOO_SHORT", "NO_SPEECH", "AUDIO_DECODE_ERROR", "AUDIO_TOO_LONG"):
                    raise  # the server or the request, not this clip: stop
                failures.append((str(path), f"{exc.code}: {exc.message}"))
                continue
            row = {"clip": str(path), "verdict": r.verdict, "speaker": r.speaker, "accepted": r.accepted,
                   "score": r.score, "threshold": r.threshold, "threshold_method": r.threshold_method,
                   "model": r.model, "speech_s": r.speech_s,
                   "matches": [{"rank": m.rank, "speaker": m.speaker, "score": m.score} for m in r.matches],
                   "multi_speaker": r.multi_speaker, "warnings": list(r.warnings)}
            for w in r.warnings:
                warn(f"{path}: {w}")
            if as_json:
                sys.stdout.write(json.dumps(row, allow_nan=False) + "\n")
                sys.stdout.flush()
                continue
            best = "" if r.score is None else f"{r.score:.3f}"
            top = ", ".join(f"{m.speaker} {m.score:.3f}" for m in r.matches)
            out.print(f"{path}  {r.verdict}  {best}  {top}", markup=False)
    report_failures(failures, len(files))
    finish(EXIT_SOME_FAILED if failures else EXIT_OK)


@remote_app.command("enroll")
def remote_enroll(
    speaker: str = typer.Argument(..., help="Name of the speaker."),
    clips: list[Path] = typer.Argument(..., help="Clips of that speaker (folders walked recursively)."),
    as_json: bool = typer.Option(False, "--json", help="Print the server's answer as JSON."),
    url: str = URL_OPT,
    api_key: str | None = KEY_OPT,
) -> None:
    """Enrol a speaker on the server. Exits 2 when no clip was accepted, 1 when some were refused."""
    if not speaker.strip():
        raise CliError("the speaker name must not be empty")
    with _client(url, api_key) as c:
        res = c.enroll(speaker.strip(), expand_inputs(clips))
    if as_json:
        print_json({**res.__dict__, "feedback": [f.__dict__ for f in res.feedback]})
    else:
        out.print(f"enrolled {res.clips_accepted} clips of {res.speaker} ({res.speech_s:.1f} s of speech); "
                  f"{res.speaker} now has {res.speaker_clips} clips", markup=False)
    for f in res.feedback:
        if f.code == "ALREADY_ENROLLED":
            err.print(f"{f.filename or f.clip}: already enrolled", markup=False)
        elif not f.accepted and f.code not in ("AUDIO_OK", "DUPLICATE_IN_REQUEST"):
            warn(f"{f.filename or f.clip}: {f.code}: {f.message}")
    finish(EXIT_SOME_FAILED if res.clips_rejected else EXIT_OK)


@remote_app.command("diarize")
def remote_diarize(
    audio: Path = typer.Argument(..., help="A recording."),
    num_speakers: int | None = typer.Option(None, "--num-speakers", help="Exactly this many speakers."),
    min_speakers: int | None = typer.Option(None, "--min-speakers", help="At least this many speakers."),
    max_speakers: int | None = typer.Option(None, "--max-speakers", help="At most this many speakers."),
    names: bool = typer.Option(True, "--names/--no-names", help="Name speakers from the server's index."),
    rttm: Path | None = typer.Option(None, "--rttm", help="Also write the turns to this RTTM file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: one record per turn (as `speakerid diarize`)."),
    url: str = URL_OPT,
    api_key: str | None = KEY_OPT,
) -> None:
    """Who spoke when in AUDIO, asked of the server (named from its index)."""
    from ..diarize.options import check_speaker_counts

    check_speaker_counts(num_speakers, min_speakers, max_speakers,
                         names=("--num-speakers", "--min-speakers", "--max-speakers"))
    with _client(url, api_key) as c:
        res = c.diarize(audio, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers,
                        name_speakers=names)
    tl = res.timeline
    for w in res.warnings:
        warn(f"{audio}: {w}")
    if rttm is not None:
        rttm.parent.mkdir(parents=True, exist_ok=True)
        rttm.write_text(tl.to_rttm(audio.stem), encoding="utf-8")
    if as_json:  # what `speakerid diarize --json` prints, so `speakerid enroll --from-timeline` reads it
        print_json({"file": str(audio), **tl.to_dict(), "source": str(audio), "named": res.named,
                    "index_version": res.index_version})
        return
    out.print(f"{audio}: {tl.duration_s:.1f} s, {len(tl.labels())} speakers", markup=False)
    for t in tl.turns:
        score = "" if t.score is None else f"  {t.score:.3f}"
        out.print(f"  {t.start_s:8.2f} {t.end_s:8.2f}  {t.speaker}{score}", markup=False)
