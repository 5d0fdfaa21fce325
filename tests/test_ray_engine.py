"""The Ray engine (speakerid.indexer.ray_engine) on a local Ray cluster shared by the tests.

Real speech: short clips of librispeech-251 linked into DIR/<speaker>/; model campplus. The
Ray index must equal the local engine's (same ids, speakers and content, embeddings within
1e-5), resume must re-embed nothing, bad files must be recorded, not fatal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import ray

from speakerid.config import EmbedOptions
from speakerid.embedder import Embedder
from speakerid.errors import ConfigError
from speakerid.index import SpeakerIndex
from speakerid.indexer import build_index
from speakerid.indexer.ray_engine import build_index_ray

REPO = Path(__file__).resolve().parents[1]
N_CLIPS = 8


@pytest.fixture(scope="session")
def ray_cluster():
    """One local cluster of 2 CPUs for every test here (starting one costs ~8 s)."""
    # the workers import speakerid from the checkout, whatever the install says
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(librispeech: Path, librispeech_rows: list[dict]) -> list[tuple[Path, str]]:
    """N_CLIPS short (3-6 s) clips of distinct speakers, as (absolute path, speaker)."""
    rows = sorted((r for r in librispeech_rows if 3.0 <= float(r["duration_s"]) <= 6.0), key=lambda r: r["file"])
    return [((librispeech / r["file"]).resolve(), r["speaker"]) for r in rows[:N_CLIPS]]


@pytest.fixture(scope="module")
def campplus() -> Embedder:
    return Embedder("campplus", embed=EmbedOptions(threads=1))


def folders(root: Path, clips: list[tuple[Path, str]]) -> Path:
    for src, spk in clips:
        (root / spk).mkdir(parents=True, exist_ok=True)
        (root / spk / src.name).symlink_to(src)
    return root


def test_ray_index_equals_the_local_engines(tmp_path, clips, campplus, ray_cluster):
    corpus = folders(tmp_path / "c", clips)
    local = build_index(corpus, tmp_path / "local", embedder=campplus, workers=2)
    calls: list[tuple] = []
    rep = build_index_ray(corpus, tmp_path / "ray", embedder=campplus,
                          progress=lambda stage, done, total, **extra: calls.append((stage, done, total)))
    assert (rep.files_total, rep.files_embedded, rep.files_failed) == (N_CLIPS, N_CLIPS, 0)
    assert rep.audio_s == pytest.approx(local.audio_s) and rep.threshold == pytest.approx(local.threshold)
    a, b = SpeakerIndex.open(tmp_path / "local"), SpeakerIndex.open(tmp_path / "ray")
    ua, ub = a.utterances(), b.utterances()
    for col in ("id", "speaker", "sha256", "path"):
        assert ua[col].to_pylist() == ub[col].to_pylist(), col
    np.testing.assert_allclose(a.vectors(ua["id"].to_numpy()), b.vectors(ub["id"].to_numpy()), atol=1e-5, rtol=0)
    indexing = [c for c in calls if c[0] == "indexing"]
    assert indexing[0][1:] == (0, N_CLIPS) and indexing[-1][1:] == (N_CLIPS, N_CLIPS)
    assert calls[-2:] == [("saving", 0, 1), ("saving", 1, 1)]


def test_resume_re_embeds_nothing_and_bad_files_are_recorded(tmp_path, clips, ray_cluster, monkeypatch, capsys):
    from conftest import run_main

    corpus = folders(tmp_path / "c", clips[:4])
    # the first build from the CLI (it uses the running cluster, and leaves it running)
    code, out, _ = run_main(["index", "build", str(corpus), "-i", str(tmp_path / "ix"), "--engine", "ray",
                             "--json"], monkeypatch, capsys)
    assert code == 0 and ray.is_initialized()
    first = json.loads(out)
    assert first["files_embedded"] == 4 and first["utterances"] == 4
    campplus = Embedder("campplus", embed=EmbedOptions(threads=1))
    version = SpeakerIndex.open(tmp_path / "ix").version
    # new content: two good clips (one of them twice, under another name), a corrupt file
    spk = clips[0][1]
    (corpus / spk / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(4000))
    folders(corpus, clips[4:6])
    (corpus / clips[4][1] / "copy.flac").symlink_to(clips[4][0])
    rep = build_index_ray(corpus, tmp_path / "ix", embedder=campplus)
    assert (rep.files_total, rep.files_skipped_known, rep.files_embedded, rep.files_duplicate, rep.files_failed) \
        == (8, 4, 2, 1, 1)
    (path, error), = rep.failures
    assert Path(path).name == "corrupt.wav" and error.startswith("AudioDecodeError")
    ix = SpeakerIndex.open(tmp_path / "ix", verify=True)
    assert len(ix) == 6 and ix.version > version
    assert [f["path"] for f in ix.failures().to_pylist()] == [path]
    shas = ix.utterances()["sha256"].to_pylist()
    assert len(shas) == len(set(shas))
    # a third run: everything is known (the copy too), nothing is embedded; the corrupt file is tried again
    again = build_index_ray(corpus, tmp_path / "ix", embedder=campplus)
    assert (again.files_skipped_known, again.files_embedded, again.files_failed) == (7, 0, 1)
    assert len(SpeakerIndex.open(tmp_path / "ix")) == 6


def test_bad_arguments(tmp_path, clips, campplus, ray_cluster):
    corpus = folders(tmp_path / "c", clips[:1])
    for kwargs in ({"concurrency": 0}, {"batch_size": 0}, {"checkpoint_every_s": -1}):
        with pytest.raises(ConfigError):
            build_index_ray(corpus, tmp_path / "ix", embedder=campplus, **kwargs)
    assert not (tmp_path / "ix").exists()


def test_cli_refuses_bad_engine_options(tmp_path, clips, monkeypatch, capsys):
    from conftest import run_main

    corpus = folders(tmp_path / "c", clips[:1])
    code, _, err = run_main(["index", "build", str(corpus), "-i", str(tmp_path / "ix"), "--engine", "spark"],
                            monkeypatch, capsys)
    assert code == 2 and "--engine" in err
    code, _, err = run_main(["index", "build", str(corpus), "-i", str(tmp_path / "ix"), "--address", "auto"],
                            monkeypatch, capsys)
    assert code == 2 and "--address needs --engine ray" in err
    assert not (tmp_path / "ix").exists()


def test_sharded_search_from_ray_equals_one_process(tmp_path, ray_cluster):
    from speakerid.index.sharded import RayShardedIndex, Shard, ShardedIndex

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 192)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:20] + 0.3 * rng.standard_normal((20, 192)).astype(np.float32)
    dirs = []
    for j, (a, b) in enumerate([(0, 1000), (1000, 1100), (1100, 3000)]):
        Shard.flat(x[a:b], np.arange(a, b) + 10).save(tmp_path / f"s{j}")
        dirs.append(tmp_path / f"s{j}")
    local = ShardedIndex.open(dirs)
    remote = RayShardedIndex(dirs)
    try:
        assert len(remote) == len(local) == 3000
        d1, i1 = local.search(q, 15)
        d2, i2 = remote.search(q, 15)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(d1, d2, atol=1e-6)
    finally:
        remote.close()
