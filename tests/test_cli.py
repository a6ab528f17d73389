"""The `korag` CLI contract, in-process (no broker): ingest, search, chunks."""

from __future__ import annotations

import json

import pytest

from bench import documents as docs
from tests.conftest import korag_cli, korag_env, offline_model_path

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path):
    return korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data")})


def test_ingest_search_chunks_round_trip(tmp_path, env):
    folder = tmp_path / "in"
    made = docs.all_formats(folder)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    (folder / "empty.md").write_bytes(b"")

    done = korag_cli(["ingest", "in", "--json"], env, tmp_path)
    assert done.returncode == 1, done.stderr  # some documents failed
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(set(line) == {"source", "doc_id", "status", "chunks", "error"} for line in lines)
    by_source = {line["source"]: line for line in lines}
    assert len(by_source) == len(made) + 2
    for path in made.values():
        line = by_source[f"in/{path.name}"]
        assert line["status"] == "indexed" and line["chunks"] >= 1 and line["error"] is None
    assert by_source["in/broken.pdf"]["status"] == "failed" and "PDF" in by_source["in/broken.pdf"]["error"]
    assert by_source["in/empty.md"]["error"] == "empty file"

    found = korag_cli(["search", "ZEBRA-QUARTZ-7781", "-k", "3", "--json"], env, tmp_path)
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert answer["query"] == "ZEBRA-QUARTZ-7781" and len(answer["results"]) == 3
    assert set(answer["results"][0]) == {"id", "score", "text", "metadata"}
    assert docs.SECRET_SENTENCE in answer["results"][0]["text"]

    human = korag_cli(["search", "ZEBRA-QUARTZ-7781", "-k", "1"], env, tmp_path)
    assert human.stdout.startswith(" 1. ") and "ZEBRA" in human.stdout

    doc_id = by_source["in/문서.docx"]["doc_id"]
    listed = korag_cli(["chunks", "--doc-id", doc_id, "--json"], env, tmp_path)
    chunks = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(chunks) == by_source["in/문서.docx"]["chunks"]
    assert all(set(c) == {"id", "text", "metadata"} and c["metadata"]["doc_id"] == doc_id for c in chunks)


def test_unavailable_model_is_a_clear_error(tmp_path, env):
    docs.make_markdown(tmp_path / "a.md")
    env["KORAG_EMBEDDING_MODEL"] = "nlpai-lab/KoE5"
    done = korag_cli(["ingest", "a.md"], env, tmp_path)
    assert done.returncode == 2
    assert "cannot load embedding model 'nlpai-lab/KoE5'" in done.stderr
    assert "KORAG_EMBEDDING_MODEL" in done.stderr and "Traceback" not in done.stderr


def test_missing_file_fails_alone(tmp_path, env):
    docs.make_markdown(tmp_path / "a.md")
    done = korag_cli(["ingest", "a.md", "nope.txt", "--json"], env, tmp_path)
    lines = {json.loads(l)["source"]: json.loads(l) for l in done.stdout.splitlines()}
    assert done.returncode == 1
    assert lines["a.md"]["status"] == "indexed"
    assert lines["nope.txt"]["status"] == "failed" and "No such file" in lines["nope.txt"]["error"]


def test_unreachable_hub_fails_fast(tmp_path, env):
    """No HF_HUB_OFFLINE, the Hub unreachable (a closed loopback port), the model not cached:
    the same clear error in seconds, not after a minute of download retries."""
    import time

    docs.make_markdown(tmp_path / "a.md")
    env = {k: v for k, v in env.items() if k != "HF_HUB_OFFLINE"}
    env.update(KORAG_EMBEDDING_MODEL="nlpai-lab/KoE5", HF_ENDPOINT="https://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    start = time.monotonic()
    done = korag_cli(["ingest", "a.md"], env, tmp_path)
    assert done.returncode == 2 and "Hugging Face Hub cannot be reached" in done.stderr
    assert time.monotonic() - start < 30
