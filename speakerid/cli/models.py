"""`speakerid models list|pull|info|add`."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import (
    app,
    err,
    out,
    print_json,
    threshold_arg,
)
from ._progress import RichProgress

models_app = typer.Typer(no_args_is_help=True, help="List, pull, inspect and add speaker models.")
app.add_typer(models_app, name="models")


JSON_OPT = typer.Option(False, "--json", help="Print JSON.")


def _fix(name: str) -> str:
    """What to do about a damaged or stale cached model."""
    from ..models.registry import BUILTIN

    if name in BUILTIN:
        return f"repaired on next use, or now by `speakerid models pull {name}`"
    return f"remove it and run `speakerid models add {name} ...` again from its ONNX file"


@models_app.command("list")
def models_list(as_json: bool = JSON_OPT) -> None:
    """Models by name, and the state of each in the cache (cached, corrupt, stale, not pulled)."""
    from ..models import store

    rows = []
    names = store.available_models()
    width = max([12, *(len(n) for n in names)])
    for name in names:
        i = store.info(name)
        desc = i.get("description") or i.get("spec", {}).get("description", "")
        rows.append({"name": name, "state": i["state"], "problem": i.get("problem"), "description": desc})
        if not as_json:
            out.print(f"{name:<{width}} {i['state']:<11} {desc}", markup=False)
            if i["state"] in ("corrupt", "stale"):
                out.print(f"{'':<{width}} {i.get('problem') or ''}: {_fix(name)}", markup=False)
    if as_json:
        print_json(rows)


@models_app.command("pull")
def models_pull(
    name: str = typer.Argument(...),
    force: bool = typer.Option(False, "--force", help="Convert again even if the cached copy is intact."),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="Directory of speech to calibrate campplus-int8 on (default: its bundled "
        "set); rebuilds the model."),
    as_json: bool = JSON_OPT,
) -> None:
    """Download, verify and convert a model into the cache (a damaged cached copy is repaired)."""
    from ..models import store

    before = store.info(name)["state"]
    with RichProgress(err) as bar:
        spec = store.pull(name, force=force, progress=bar, calibration=calibration)
    if as_json:
        print_json({"name": spec.name, "dim": spec.dim, "frontend": spec.frontend,
                    "weights_sha256": spec.weights_sha256, "was": before, "state": store.info(name)["state"]})
        return
    what = "repaired" if before in ("corrupt", "stale") else "ready"
    out.print(f"{spec.name} {what}: {spec.dim}-d, front end {spec.frontend}, "
              f"weights sha256 {spec.weights_sha256[:16]}…")


@models_app.command("info")
def models_info(name: str = typer.Argument(...),
                as_json: bool = typer.Option(True, "--json", help="Print JSON (the only format).")) -> None:
    """Everything known about a model, as JSON."""
    from ..models import store

    print_json(store.info(name))


@models_app.command("add")
def models_add(
    name: str = typer.Argument(..., help="Name to give the model."),
    onnx_file: Path = typer.Option(..., "--onnx", help="ONNX speaker encoder."),
    frontend: str = typer.Option(..., help="autospeech | fbank"),
    mean: Path | None = typer.Option(None, help="Feature mean .npy (autospeech)."),
    std: Path | None = typer.Option(None, help="Feature std .npy (autospeech)."),
    config: Path | None = typer.Option(None, help="yaml with front-end options and model io (fbank)."),
    threshold: float | None = typer.Option(None, help="Default verification threshold."),
    as_json: bool = JSON_OPT,
) -> None:
    """Add your own ONNX encoder (e.g. AutoSpeech's proposed_veri.onnx, a WeSpeaker export)."""
    from ..models.user import add_model

    threshold = threshold_arg(threshold)
    spec = add_model(name, onnx_file, frontend=frontend, mean=mean, std=std, config=config, threshold=threshold)
    if as_json:
        print_json({"name": spec.name, "dim": spec.dim, "frontend": spec.frontend,
                    "weights_sha256": spec.weights_sha256, "default_threshold": spec.default_threshold})
        return
    out.print(f"added {spec.name}: {spec.dim}-d, front end {spec.frontend}, sha256 {spec.weights_sha256[:16]}…")


