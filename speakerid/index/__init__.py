"""On-disk speaker gallery: L2-normalised embeddings in FAISS plus parquet metadata.

Only persistence and search live here; audio is embedded elsewhere and passed in as vectors
(:func:`open_with_embedder` pairs an index with an embedder of its model). Scores are inner
products of unit vectors, i.e. raw cosine similarities.

One job per module:

* :mod:`~speakerid.index.spec`: :class:`IndexSpec` (model, weights, dim, index type and
  parameters) and :func:`check_model`, the one model-mismatch check;
* :mod:`~speakerid.index.backend`: FAISS (index factory, search parameters, IVF training,
  removal, search, vector validation);
* :mod:`~speakerid.index.storage`: versioned directories, the ``CURRENT`` pointer, and the
  format-1 files (one whole copy per version; still read, converted on upgrade);
* :mod:`~speakerid.index.segments`: format 2, the layout written today: append-only segments
  (FAISS + Parquet), tombstones and a centroid snapshot named by a small manifest per version
  (layout and crash safety are described there);
* :mod:`~speakerid.index.recovery`: :func:`verify_index` and :func:`rollback`;
* :mod:`~speakerid.index.lock`: :class:`WriterLock`, the one-writer lock;
* :mod:`~speakerid.index.clips`: the clip and failure tables (checking and making rows);
* :mod:`~speakerid.index.speakers`: per-speaker statistics, the stored centroid index that
  serves centroid scoring, and the :class:`SpeakerMaps` that scoring works on;
* :mod:`~speakerid.index.threshold`: the threshold record stored with each version;
* :mod:`~speakerid.index.gallery`: :class:`SpeakerIndex`, which owns all of the above;
* :mod:`~speakerid.index.opening`: :func:`open_with_embedder`.
"""

from .backend import all_vectors, auto_nlist, build_faiss_index, set_search_params
from .gallery import SpeakerIndex
from .lock import LOCK_FILE, WriterLock
from .opening import open_with_embedder
from .recovery import IndexCheck, VersionCheck, current_version, rollback, verify_index
from .segments import VERIFY_MAX_BYTES
from .speakers import SpeakerMaps
from .spec import IndexSpec, IndexType, check_model
from .storage import (
    DATA_FILES,
    FAILURES_FILE,
    FAILURES_SCHEMA,
    FORMAT_VERSION,
    INDEX_FILE,
    MANIFEST_FILE,
    POINTER,
    SPEAKERS_FILE,
    SPEAKERS_SCHEMA,
    UTTERANCES_FILE,
    UTTERANCES_SCHEMA,
)

__all__ = [
    "DATA_FILES", "FAILURES_FILE", "FAILURES_SCHEMA", "FORMAT_VERSION", "INDEX_FILE", "IndexCheck", "IndexSpec",
    "IndexType", "LOCK_FILE", "MANIFEST_FILE", "POINTER", "SPEAKERS_FILE", "SPEAKERS_SCHEMA", "SpeakerIndex",
    "SpeakerMaps", "UTTERANCES_FILE", "UTTERANCES_SCHEMA", "VERIFY_MAX_BYTES", "VersionCheck", "WriterLock", "all_vectors",
    "auto_nlist", "build_faiss_index", "check_model", "current_version", "open_with_embedder", "rollback",
    "set_search_params", "verify_index",
]
