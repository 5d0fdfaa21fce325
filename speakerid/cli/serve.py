"""`speakerid serve` (the REST service) and `speakerid serve keys add|list|remove`."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import CliError, app, err, out, print_json

serve_app = typer.Typer(help="Serve enrolment, verification and identification over HTTP (FastAPI).")
app.add_typer(serve_app, name="serve")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the service: only their sha256 is stored.")
serve_app.add_typer(keys_app, name="keys")

KEYS_OPT = typer.Option(None, "--keys", help="API keys file (default: ~/.config/speakerid/serve-keys.json).")


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    index_dir: Path | None = typer.Option(None, "--index", "-i", help="Speaker index to serve (created by the first enrolment)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, help="Port (0: any free one; the line 'serving on URL' says which)."),
    workers: int = typer.Option(2, "--workers", "-w", help="Embedding threads (one core each)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model of a new index (default campplus)."),
    keys_file: Path | None = KEYS_OPT,
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without API keys (loopback hosts only)."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", help="Largest request body, MiB."),
    max_audio: float = typer.Option(300.0, "--max-audio", help="Longest clip, seconds."),
    max_clips: int = typer.Option(20, "--max-clips", help="Clips per enrolment request."),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests waiting for an embedding thread at most."),
    queue_timeout: float = typer.Option(10.0, "--queue-timeout", help="Seconds a request may wait (then 503)."),
    write_timeout: float = typer.Option(60.0, "--write-timeout", help="Seconds a write may wait for the writer (then 503)."),
    lock_wait: float = typer.Option(5.0, "--lock-wait", help="Seconds to wait for another process writing the index."),
    shutdown_timeout: float = typer.Option(30.0, "--shutdown-timeout", help="Seconds in-flight work gets at shutdown."),
    audit_log: Path | None = typer.Option(None, "--audit-log", help="Also append audit lines (JSON) to this file."),
    ssl_certfile: Path | None = typer.Option(None, "--ssl-certfile", help="TLS certificate (with --ssl-keyfile)."),
    ssl_keyfile: Path | None = typer.Option(None, "--ssl-keyfile", help="TLS private key."),
) -> None:
    """Serve an index: POST /v1/verify, /v1/identify, /v1/speakers/NAME/enrollments; GET /v1/speakers,
    /v1/info, /v1/health; DELETE /v1/speakers/NAME. OpenAPI at /openapi.json, docs at /docs.

    Every /v1 request but health needs an API key (`speakerid serve keys add`) unless --no-auth."""
    if ctx.invoked_subcommand is not None:
        return
    from ..serve import MISSING_EXTRA, ServeOptions, missing_extra

    if missing_extra() is not None:
        raise CliError(MISSING_EXTRA)
    if index_dir is None:
        raise CliError("--index is required: the speaker index to serve")
    if max_upload_mb <= 0:
        raise CliError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    options = ServeOptions(
        index_dir=index_dir, host=host, port=port, workers_n=workers, model=model, keys_file=keys_file,
        no_auth=no_auth, max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_audio_s=max_audio,
        max_clips_n=max_clips, max_queue_n=max_queue, queue_timeout_s=queue_timeout,
        write_timeout_s=write_timeout, lock_wait_s=lock_wait, shutdown_timeout_s=shutdown_timeout,
        audit_log=audit_log, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
    )
    if not options.loopback and options.ssl_certfile is None:
        err.print(f"[yellow]warning:[/yellow] serving on {host} without TLS: API keys and audio cross the "
                  "network in clear (put a TLS proxy in front, or pass --ssl-certfile/--ssl-keyfile)")
    from ..serve.server import serve as run

    run(options)


def _store(keys_file: Path | None):
    from ..serve.auth import KeyStore, default_keys_file

    return KeyStore(keys_file or default_keys_file())


@keys_app.command("add")
def keys_add(
    name: str = typer.Argument(..., help="Who the key is for (letters, digits, '.', '_', '-')."),
    scope: str = typer.Option(..., "--scope", help="read (verify, identify, list) | enroll (+ enrol) | admin (+ delete)."),
    keys_file: Path | None = KEYS_OPT,
) -> None:
    """Create a key and print it once on stdout (the file keeps only its sha256)."""
    store = _store(keys_file)
    token = store.add(name, scope)
    out.print(token, markup=False)
    err.print(f"key {name!r} ({scope}) added to {store.path}; it is shown only now: store it safely",
              markup=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(
    keys_file: Path | None = KEYS_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Name, scope and creation time of each key (the keys themselves are not stored)."""
    entries = _store(keys_file).entries()
    if as_json:
        print_json([{"name": e.name, "scope": e.scope, "created_at": e.created_at} for e in entries])
        return
    if not entries:
        err.print("no keys yet: `speakerid serve keys add NAME --scope read|enroll|admin`")
    for e in entries:
        out.print(f"{e.name:<24} {e.scope:<7} {e.created_at}", markup=False)


@keys_app.command("remove")
def keys_remove(
    name: str = typer.Argument(..., help="Name of the key to revoke."),
    keys_file: Path | None = KEYS_OPT,
) -> None:
    """Revoke a key (a running server notices the change at its next request)."""
    store = _store(keys_file)
    store.remove(name)
    err.print(f"key {name!r} removed from {store.path}", markup=False, soft_wrap=True)
