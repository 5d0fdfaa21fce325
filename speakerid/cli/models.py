"""`speakerid models list|pull|info|add`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ._common import (
    app,
    out,
    progress_line,
    threshold_arg,
)

models_app = typer.Typer(no_args_is_help=True, help="List, pull, inspect and add speaker models.")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Models by name, and whether each is cached."""
    from ..models import store

    for name in store.available_models():
        i = store.info(name)
        state = "cached" if i["cached"] else "not pulled"
        desc = i.get("description") or i.get("spec", {}).get("description", "")
        out.print(f"{name:<12} {state:<11} {desc}")


@models_app.command("pull")
def models_pull(name: str = typer.Argument(...), force: bool = typer.Option(False, help="Convert again.")) -> None:
    """Download, verify and convert a model into the cache."""
    from ..models import store

    spec = store.pull(name, force=force, progress=progress_line)
    out.print(f"{spec.name}: {spec.dim}-d, front end {spec.frontend}, weights sha256 {spec.weights_sha256[:16]}…")


@models_app.command("info")
def models_info(name: str = typer.Argument(...)) -> None:
    """Everything known about a model, as JSON."""
    from ..models import store

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
    from ..models.user import add_model

    threshold = threshold_arg(threshold)
    spec = add_model(name, onnx_file, frontend=frontend, mean=mean, std=std, config=config, threshold=threshold)
    out.print(f"added {spec.name}: {spec.dim}-d, front end {spec.frontend}, sha256 {spec.weights_sha256[:16]}…")


