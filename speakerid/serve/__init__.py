"""``speakerid serve``: enrolment, verification and identification over HTTP (FastAPI, uvicorn).

Needs the ``serve`` extra (``pip install 'speakerid[serve]'``). The pieces:

* :mod:`.options`: :class:`ServeOptions`, every limit with its unit in its name;
* :mod:`.auth`: API keys (hashes only, in a 0600 file), scopes read < enroll < admin;
* :mod:`.service`: the model, the bounded embedding pool, the one writer, the read snapshot;
* :mod:`.app`: the routes; :mod:`.errors`: the one error body and its stable codes;
* :mod:`.server`: uvicorn, graceful shutdown.

Only :mod:`.options`, :mod:`.auth` and :mod:`.errors` import without the extra (the ``keys``
commands need nothing more).

Use::

    speakerid serve keys add alice-app --scope enroll      # prints the key once
    speakerid serve --index index/default                  # 127.0.0.1:8000
    curl -H "Authorization: Bearer $KEY" -F clips=@a1.wav -F clips=@a2.wav \
        http://127.0.0.1:8000/v1/speakers/alice/enrollments
    curl -H "Authorization: Bearer $KEY" -F clip=@who.wav -F k=3 http://127.0.0.1:8000/v1/identify

or :class:`speakerid.client.Client`, or ``speakerid remote identify who.wav`` (with
``SPEAKERID_URL`` and ``SPEAKERID_API_KEY`` set).
"""

from .options import ServeOptions, is_loopback

__all__ = ["MISSING_EXTRA", "ServeOptions", "is_loopback", "missing_extra"]

#: What ``speakerid serve`` says when FastAPI or uvicorn is not installed.
MISSING_EXTRA = "speakerid serve needs the serve extra: pip install 'speakerid[serve]'"


def missing_extra() -> str | None:
    """The name of the first missing package of the serve extra, or None when all are there."""
    import importlib.util

    def found(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError, AttributeError):
            return False

    for modules, package in ((("fastapi",), "fastapi"), (("uvicorn",), "uvicorn"),
                             (("python_multipart", "multipart"), "python-multipart")):
        if not any(found(m) for m in modules):
            return package
    return None
