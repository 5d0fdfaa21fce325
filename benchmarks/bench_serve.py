"""Bounded load test of `speakerid serve` on 127.0.0.1, against the same work done in-process.

    python benchmarks/bench_serve.py --requests 200 --out benchmarks/results/serve.json

(under ``nice -n 10`` on a shared machine). A gallery of 3 s crops of librispeech-251 (one per speaker; other 3 s crops of the same
utterances are the queries) is served by a real ``python -m speakerid serve`` process (2
embedding threads, API keys on). Every phase sends a fixed number of requests and stops:

1. in-process: ``Embedder.embed_detailed`` + ``identify`` of the queries, one at a time (the
   server's configuration, 1 ONNX Runtime thread; and the library default, all cores) and on
   2 threads (what 2 cores give, requests/s);
2. HTTP identify at 1, 4 and 16 concurrent clients (p50/p99 latency, requests/s);
3. enrolments (unique clips, unique names) under 4 concurrent identify clients; afterwards
   the index is opened in-process and every acknowledged enrolment must be there exactly once,
   and nothing else;
4. kill -9 of the server in the middle of an enrolment stream, restart: every acknowledged
   enrolment must be there.

The load generator (asyncio + httpx) runs in this process, on the same 2 cores as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SR = 16000
CROP_S = 3.0


# --- data ------------------------------------------------------------------------------------


def _wav(x: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def crops(data: Path, emb, speakers_n: int) -> tuple[dict[str, bytes], list[bytes], list[bytes]]:
    """(enrol crop per speaker, query crops, spare crops for enrolment) with >= 1.5 s of speech each."""
    import soundfile as sf

    from speakerid.errors import NoSpeechError

    def speech(x: np.ndarray) -> float:
        try:
            return emb.prepare(x, SR).speech_s
        except NoSpeechError:
            return 0.0

    with open(data / "speakers.csv", newline="") as f:
        rows = [r for r in sorted(csv.DictReader(f), key=lambda r: r["file"]) if float(r["duration_s"]) >= 10]
    n = int(CROP_S * SR)
    enrol, query, spare = {}, [], []
    for r in rows[:speakers_n]:
        x, _ = sf.read(data / r["file"], dtype="float32")
        parts = [x[int(t * SR): int(t * SR) + n] for t in (0.5, 4.0, 7.0)]
        if all(speech(p) >= 1.5 for p in parts):
            enrol[f"ls-{r['speaker']}"] = _wav(parts[0])
            query.append(_wav(parts[1]))
            spare.append(parts[2])
    return enrol, query, spare


def unique_clips(spare: list[np.ndarray], n: int, seed: int) -> list[bytes]:
    """``n`` clips of real speech, each with distinct content (a 1-LSB dither of a spare crop)."""
    out = []
    for i in range(n):
        x = spare[i % len(spare)]
        d = np.random.default_rng(seed + i).integers(-1, 2, len(x)) / 32768.0
        out.append(_wav(np.clip(x + d, -1, 1).astype(np.float32)))
    return out


# --- the server ------------------------------------------------------------------------------


class Server:
    def __init__(self, index: Path, keys: Path, log: Path, workers: int) -> None:
        cmd = [sys.executable, "-m", "speakerid", "serve", "--index", str(index), "--host", "127.0.0.1",
               "--port", "0", "--keys", str(keys), "--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            with open(log, "a") as f:
                for line in self.proc.stderr:  # type: ignore[union-attr]
                    f.write(line)
                    m = re.search(r"serving on (http://\S+)", line)
                    if m and not self.url:
                        self.url = m.group(1)
                        ready.set()
                    f.flush()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or not self.url:
            self.proc.kill()
            raise RuntimeError(f"the server did not start (see {log})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


# --- measuring -------------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(lat_s: list[float], wall_s: float, statuses: Counter) -> dict:
    a = np.asarray(lat_s) * 1e3
    return {"requests": len(lat_s), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "mean_ms": round(float(a.mean()), 1),
            "requests_per_s": round(len(lat_s) / wall_s, 2), "wall_s": round(wall_s, 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def in_process(index: Path, queries: list[bytes], n: int, tmp: Path) -> dict:
    from speakerid import Embedder, EmbedOptions
    from speakerid.identify import identify
    from speakerid.index import SpeakerIndex

    paths = []
    for i, q in enumerate(queries):
        p = tmp / f"q{i}.wav"
        p.write_bytes(q)
        paths.append(p)
    ix = SpeakerIndex.open(index)
    out = {}
    for label, threads in (("one_thread", 1), ("all_cores", None)):
        emb = Embedder(ix.spec.model, embed=EmbedOptions(threads=threads))
        work = lambda p, emb=emb: identify(ix, emb.embed_detailed(p).vector, 5)  # noqa: E731
        for p in paths[:5]:
            work(p)
        lat = []
        t0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(n):
            t = time.perf_counter()
            work(paths[i % len(paths)])
            lat.append(time.perf_counter() - t)
        out[f"sequential_{label}"] = summary(lat, time.perf_counter() - t0, Counter({"ok": n}))
        out[f"sequential_{label}"]["cpu_ms_per_request"] = round(1e3 * (time.process_time() - cpu0) / n, 2)
        if threads == 1:
            def timed(i: int, work=work) -> float:
                t = time.perf_counter()
                work(paths[i % len(paths)])
                return time.perf_counter() - t

            with ThreadPoolExecutor(2) as pool:
                t0 = time.perf_counter()
                lat = list(pool.map(timed, range(n)))
                out["two_threads"] = summary(lat, time.perf_counter() - t0, Counter({"ok": n}))
    return out


async def identify_load(url: str, key: str, queries: list[bytes], n: int, clients: int, pid: int = 0) -> dict:
    import httpx

    lat: list[float] = []
    statuses: Counter = Counter()
    counter = itertools.count()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                                 limits=limits) as c:
        async def one(i: int) -> None:
            t = time.perf_counter()
            r = await c.post("/v1/identify", files={"clip": ("q.wav", queries[i % len(queries)], "audio/wav")})
            lat.append(time.perf_counter() - t)
            statuses[r.status_code] += 1

        await asyncio.gather(*(one(i) for i in range(clients * 2)))  # warm-up: connections, model
        lat.clear()
        statuses.clear()

        async def worker() -> None:
            while (i := next(counter)) < n:
                await one(i)

        t0, cpu0, server0 = time.perf_counter(), time.process_time(), process_cpu_s(pid) if pid else 0.0
        await asyncio.gather(*(worker() for _ in range(clients)))
        out = {"clients": clients, **summary(lat, time.perf_counter() - t0, statuses)}
        out["client_cpu_ms_per_request"] = round(1e3 * (time.process_time() - cpu0) / n, 2)
        if pid:
            out["server_cpu_ms_per_request"] = round(1e3 * (process_cpu_s(pid) - server0) / n, 2)
        return out


async def enrol_stream(url: str, key: str, clips: list[bytes], prefix: str, streams: int,
                       acked: list[str], lat: list[float], stop_after: int | None = None) -> int:
    """Enrol clip i as speaker ``prefix-i`` on ``streams`` connections; returns the count sent."""
    import httpx

    counter = itertools.count()
    sent = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        async def worker() -> None:
            nonlocal sent
            while (i := next(counter)) < len(clips) and (stop_after is None or len(acked) < stop_after):
                sent += 1
                t = time.perf_counter()
                try:
                    r = await c.post(f"/v1/speakers/{prefix}-{i}/enrollments", files={"clips": (f"{i}.wav", clips[i])})
                except httpx.TransportError:
                    return  # the server is gone: never acknowledged
                if r.status_code == 200 and r.json()["clips_accepted"] == 1:
                    acked.append(f"{prefix}-{i}")
                    lat.append(time.perf_counter() - t)

        await asyncio.gather(*(worker() for _ in range(streams)))
    return sent


async def enrol_under_identify(server: Server, keys: dict, queries: list[bytes], clips: list[bytes],
                               n_identify: int) -> dict:
    acked: list[str] = []
    lat: list[float] = []
    t0 = time.perf_counter()
    ident, sent = await asyncio.gather(
        identify_load(server.url, keys["read"], queries, n_identify, 4),
        enrol_stream(server.url, keys["enroll"], clips, "enr", 2, acked, lat))
    wall = time.perf_counter() - t0
    return {"enrolments_sent": sent, "acked": acked,
            "enrol": summary(lat, wall, Counter({200: len(acked)})), "identify_meanwhile": ident}


def count_in_index(index: Path, prefix: str) -> dict[str, int]:
    from speakerid.index import SpeakerIndex

    utt = SpeakerIndex.open(index).utterances()
    return dict(Counter(s for s in utt["speaker"].to_pylist() if s.startswith(prefix + "-")))


async def kill9_midstream(server: Server, keys: dict, clips: list[bytes], kill_after: int) -> dict:
    acked: list[str] = []
    lat: list[float] = []
    stream = asyncio.create_task(enrol_stream(server.url, keys["enroll"], clips, "k9", 2, acked, lat))
    while len(acked) < kill_after and not stream.done():
        await asyncio.sleep(0.01)
    server.kill9()
    sent = await stream
    return {"sent": sent, "acked": acked}


def check_enrolments(found: dict[str, int], acked: list[str]) -> dict:
    return {"acknowledged": len(acked), "in_index": len(found),
            "lost": sorted(set(acked) - set(found)), "duplicated": sorted(n for n, c in found.items() if c != 1),
            "unacknowledged_present": sorted(set(found) - set(acked))}


def _mean_of(a: dict, b: dict) -> dict:
    """Two in-process runs (before and after the HTTP ones: the machine's load drifts) as one."""
    out = {k: round((a[k] + b[k]) / 2, 2) for k in ("p50_ms", "p99_ms", "mean_ms", "requests_per_s",
                                                    "cpu_ms_per_request") if k in a}
    return {**out, "requests": a["requests"] + b["requests"], "wall_s": round(a["wall_s"] + b["wall_s"], 2)}


def _shared_note(ip: dict) -> list[str]:
    """A warning when the other load on the machine left less than the 2 cores measured for."""
    one, two = ip["sequential_one_thread"]["requests_per_s"], ip["two_threads"]["requests_per_s"]
    if two >= 1.3 * one:
        return []
    return [f"The machine was shared: in-process, 2 threads gave {two} requests/s against {one} for one thread, "
            "so other processes left this run about one core. Both sides of each ratio ran under that same "
            "load; the CPU figures below do not depend on it.", ""]


def markdown(r: dict) -> str:
    ip, goals = r["in_process"], r["goals"]
    lines = [
        "# speakerid serve: load test on 127.0.0.1",
        "",
        f"Gallery: {r['config']['gallery_speakers']} speakers of librispeech-251, one 3 s crop each; queries: other "
        f"3 s crops of the same utterances. Server: `speakerid serve --workers {r['config']['workers']}` (one "
        "process, 2 embedding threads of 1 ONNX Runtime thread each, API keys on); the load generator (asyncio + "
        "httpx, one connection per client) runs on the same 2 cores. "
        f"{r['machine']['cpu_count']} cores, Python {r['machine']['python']}; load average before: "
        f"{r['machine']['load_average_before']}.",
        "",
        "## Identify of a 3 s clip",
        "",
        "In-process rows: the mean of a run before and a run after the HTTP ones (the other load on the "
        "machine drifts); each request is `Embedder.embed_detailed(file)` + `identify(index, vector, 5)`.",
        "",
        "| how | clients | requests | p50 ms | p99 ms | requests/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in (("in-process, 1 ORT thread", "sequential_one_thread"),
                       ("in-process, all cores", "sequential_all_cores"), ("in-process, 2 threads", "two_threads")):
        s = ip[key]
        lines.append(f"| {label} | {2 if key == 'two_threads' else 1} | {s['requests']} | {s['p50_ms']} | "
                     f"{s['p99_ms']} | {s['requests_per_s']} |")
    for s in r["http_identify"]:
        lines.append(f"| HTTP | {s['clients']} | {s['requests']} | {s['p50_ms']} | {s['p99_ms']} | {s['requests_per_s']} |")
    e, k = r["enrol_under_identify"], r["kill9"]
    lines += [
        "",
        f"Goals: HTTP p50 at 1 client / in-process p50 (same configuration) = **{goals['latency_ratio']}** "
        f"(goal <= 1.2: {'met' if goals['latency_ok'] else 'NOT met'}); HTTP requests/s at 16 clients / "
        f"in-process on 2 threads = **{goals['throughput_ratio']}** (goal >= 0.9: "
        f"{'met' if goals['throughput_ok'] else 'NOT met'}).",
        "",
        *_shared_note(ip),
        f"CPU per identify (less sensitive to the other load than times are): in-process "
        f"{ip['sequential_one_thread']['cpu_ms_per_request']} ms; HTTP at 1 client "
        f"{r['http_identify'][0]['server_cpu_ms_per_request']} ms in the server + "
        f"{r['http_identify'][0]['client_cpu_ms_per_request']} ms in the load generator (at 16 clients "
        f"{r['http_identify'][2]['server_cpu_ms_per_request']} + {r['http_identify'][2]['client_cpu_ms_per_request']} "
        "ms): when the cores are the limit, that ratio bounds the throughput over HTTP.",
        "",
        "## Enrolment under concurrent identify",
        "",
        f"{e['enrolments_sent']} enrolments (one unique clip each, 2 connections) while 4 clients identify: "
        f"enrol p50 {e['enrol']['p50_ms']} ms, p99 {e['enrol']['p99_ms']} ms; identify meanwhile p50 "
        f"{e['identify_meanwhile']['p50_ms']} ms, p99 {e['identify_meanwhile']['p99_ms']} ms, "
        f"{e['identify_meanwhile']['requests_per_s']} requests/s, statuses {e['identify_meanwhile']['statuses']}. "
        f"Counted in the index afterwards: {e['check']['acknowledged']} acknowledged, {e['check']['in_index']} "
        f"present, lost {len(e['check']['lost'])}, duplicated {len(e['check']['duplicated'])}, present without "
        f"acknowledgement {len(e['check']['unacknowledged_present'])}.",
        "",
        "## kill -9 in the middle of an enrolment stream",
        "",
        f"{k['sent']} enrolments sent on 2 connections, the server killed with SIGKILL after {k['check']['acknowledged']} "
        f"acknowledgements, then restarted: {k['check']['in_index']} present, lost {len(k['check']['lost'])}, "
        f"duplicated {len(k['check']['duplicated'])}, in flight at the kill and present anyway "
        f"{len(k['check']['unacknowledged_present'])}. Restart to first answer: {k['restart_s']} s.",
        "",
        f"Made by `{r['command']}`" + (f" (under `nice -n {r['machine']['niceness']}`)" if r["machine"].get("niceness")
                                        else "") + f" on {r['date']}.",
    ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, tmp: Path) -> dict:
    from speakerid import Embedder, EmbedOptions
    from speakerid.indexer import Item, add_files
    from speakerid.serve.auth import KeyStore

    emb = Embedder("campplus", embed=EmbedOptions(threads=1))
    enrol, queries, spare = crops(args.data, emb, args.speakers)
    gallery = tmp / "gallery"
    for name, wav in enrol.items():
        (gallery / name).mkdir(parents=True)
        (gallery / name / "enrol.wav").write_bytes(wav)
    index = tmp / "index"
    rep = add_files(index, [Item(gallery / n / "enrol.wav", n) for n in enrol], workers=2, embedder=emb)
    print(f"gallery: {rep.speakers} speakers", file=sys.stderr, flush=True)
    store = KeyStore(tmp / "keys.json")
    keys = {s: store.add(f"bench-{s}", s) for s in ("read", "enroll")}
    load_before = [round(x, 2) for x in os.getloadavg()]
    ip_before = in_process(index, queries, args.requests // 2, tmp)
    print(f"in-process: {json.dumps(ip_before)}", file=sys.stderr, flush=True)
    server = Server(index, tmp / "keys.json", tmp / "server.log", args.workers)
    try:
        http = [asyncio.run(identify_load(server.url, keys["read"], queries, n, c, server.proc.pid))
                for c, n in ((1, args.requests // 2), (4, args.requests), (16, args.requests))]
        print(f"http: {json.dumps(http)}", file=sys.stderr, flush=True)
        ip_after = in_process(index, queries, args.requests // 2, tmp)  # the server idles meanwhile
        print(f"in-process again: {json.dumps(ip_after)}", file=sys.stderr, flush=True)
        clips = unique_clips(spare, args.enrolments + 40, seed=0)
        e = asyncio.run(enrol_under_identify(server, keys, queries, clips[:args.enrolments], args.requests))
        e["check"] = check_enrolments(count_in_index(index, "enr"), e.pop("acked"))
        k = asyncio.run(kill9_midstream(server, keys, clips[args.enrolments:], kill_after=10))
    finally:
        server.kill9()
    t0 = time.perf_counter()
    server = Server(index, tmp / "keys.json", tmp / "server.log", args.workers)
    k["restart_s"] = round(time.perf_counter() - t0, 2)
    server.stop()
    k["check"] = check_enrolments(count_in_index(index, "k9"), k.pop("acked"))
    ip = {k: _mean_of(ip_before[k], ip_after[k]) for k in ip_before}
    lat_ratio = http[0]["p50_ms"] / ip["sequential_one_thread"]["p50_ms"]
    thr_ratio = http[2]["requests_per_s"] / ip["two_threads"]["requests_per_s"]
    return {
        "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "niceness": os.nice(0),
                    "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "config": {"gallery_speakers": rep.speakers, "queries": len(queries), "workers": args.workers,
                   "requests": args.requests, "enrolments": args.enrolments},
        "in_process": ip, "in_process_before": ip_before, "in_process_after": ip_after, "http_identify": http, "enrol_under_identify": e, "kill9": k,
        "goals": {"latency_ratio": round(lat_ratio, 3), "latency_ok": lat_ratio <= 1.2,
                  "throughput_ratio": round(thr_ratio, 3), "throughput_ok": thr_ratio >= 0.9},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "librispeech-251")
    ap.add_argument("--speakers", type=int, default=251, help="Gallery size (speakers with usable crops).")
    ap.add_argument("--requests", type=int, default=200, help="Identify requests per concurrency level.")
    ap.add_argument("--enrolments", type=int, default=40, help="Enrolments under concurrent identify.")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve.json")
    ap.add_argument("--markdown-only", action="store_true", help="Rewrite the .md from the --out JSON.")
    args = ap.parse_args()
    if args.markdown_only:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    result = run(args, tmp)  # on an error the directory stays, with the server's log
    shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
