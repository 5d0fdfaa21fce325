"""The ``speakerid`` command line. Errors become one line on stderr and exit code 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from .errors import SpeakeridError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Speaker verification and identification.")
models_app = typer.Typer(no_args_is_help=True, help="List, pull, inspect and add speaker models.")
app.add_typer(models_app, name="models")

err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".au", ".webm", ".mka", ".mp4", ".wma", ".caf", ".w64", ".sph"}


class CliError(SpeakeridError):
    """A usage problem found by the CLI itself."""


def _progress_line(message: str) -> None:
    err.print(f"[dim]speakerid:[/dim] {message}")


def _embedder(model: str, no_vad: bool, threads: int | None = None, min_speech_ms: float | None = None):
    from .config import EmbedOptions, VadOptions
    from .embedder import Embedder

    vad = VadOptions(enabled=not no_vad, **({"min_speech_ms": min_speech_ms} if min_speech_ms is not None else {}))
    return Embedder(model, vad=vad, embed=EmbedOptions(threads=threads), progress=_progress_line)


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; directories walked recursively for audio files (sorted)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS)
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

    res = run_verify(a, b, embedder=_embedder(model, no_vad), threshold=threshold)
    if as_json:
        out.print_json(json.dumps({
            "a": str(a), "b": str(b), "model": res.model, "similarity": round(res.score, 6),
            "threshold": res.threshold, "match": res.match,
            "speech_s": [round(res.a.speech_s, 3), round(res.b.speech_s, 3)],
        }))
        return
    out.print(f"similar: {res.score:.8f}")
    out.print(f"verification: {'match' if res.match else 'unmatch'} (threshold: {res.threshold:.3f}, model: {res.model})")


@app.command()
def embed(
    paths: list[Path] = typer.Argument(..., help="Audio files or directories (walked recursively)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Parquet file to write."),
    model: str = MODEL_OPT,
    workers: int = typer.Option(os.cpu_count() or 1, help="Clips embedded at once."),
    no_vad: bool = typer.Option(False, "--no-vad"),
) -> None:
    """Embed clips into a Parquet file: one row per input, failures in the error column."""
    from .export import write_embeddings

    files = expand_inputs(paths)
    emb = _embedder(model, no_vad, threads=1 if workers > 1 else None)
    summary = write_embeddings(files, out_file, emb, workers=workers, console=err)
    err.print(f"wrote {summary['rows']} rows to {out_file} ({summary['failed']} failed)")


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

    spec = add_model(name, onnx_file, frontend=frontend, mean=mean, std=std, config=config, threshold=threshold)
    out.print(f"added {spec.name}: {spec.dim}-d, front end {spec.frontend}, sha256 {spec.weights_sha256[:16]}…")


def main() -> None:
    import click

    try:
        rv = app(standalone_mode=False)
    except SpeakeridError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(2)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
