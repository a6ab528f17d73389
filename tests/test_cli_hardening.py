"""Hardening found by review (issue 8): typed filters and refused metadata keys, symbolic links and
special files in ingested trees, setup errors that exit 2 with one line, `--wait --timeout`, queries
longer than the model's limit, and the smaller edges of the CLI's output and settings."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench import documents as docs
from ingest.pipeline import DocumentInfo
from korag.cli.main import main, scan
from korag.rules import RESERVED_FIELDS, normalize_source, printable
from tests.conftest import free_port, korag_cli, korag_env, make_settings, offline_model_path

ROOT = Path(__file__).resolve().parents[1]
# test_qdrant_api_key_is_never_shown builds a server client for a closed port; qdrant-client's
# version check then warns from a background thread, during whichever test runs next.
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")


def run(monkeypatch, capsys, args: list[str], **env: str) -> tuple[int, str, str]:
    """`korag ARGS` in this process, with only the given KORAG_* variables set."""
    for key in [k for k in os.environ if k.startswith("KORAG_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def local_env(tmp_path: Path) -> dict[str, str]:
    return {"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data"),
            "KORAG_EMBEDDING_DEVICE": "cpu"}


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- 5, 6: metadata keys -----------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["a.b", "rows[0]", "x]", 'say"hi', "", "   "])
def test_meta_keys_that_could_never_be_filtered_are_refused(key):
    with pytest.raises(ValueError, match="metadata key"):
        DocumentInfo(meta=((key, "v"),))


@pytest.mark.parametrize("field", sorted(RESERVED_FIELDS))
def test_meta_cannot_set_a_field_korag_writes(field):
    with pytest.raises(ValueError, match="written by korag itself"):
        DocumentInfo(meta=((field, "999"),))


def test_cli_refuses_reserved_meta_and_empty_tenant_before_anything_runs(tmp_path, monkeypatch, capsys):
    docs.make_markdown(tmp_path / "a.md")
    monkeypatch.chdir(tmp_path)
    env = local_env(tmp_path)
    code, out, err = run(monkeypatch, capsys, ["ingest", "a.md", "--meta", "page_number=999"], **env)
    assert code == 2 and out == ""
    assert "'page_number' is written by korag itself" in err and len(err.splitlines()) == 1
    code, _, err = run(monkeypatch, capsys, ["ingest", "a.md", "--tenant", " "], **env)
    assert code == 2 and "tenant ' ' is empty" in err
    code, _, err = run(monkeypatch, capsys, ["search", "질문", "--tenant", ""], **env)
    assert code == 2 and "tenant '' is empty" in err
    assert not (tmp_path / "data").exists()  # refused before the store was even opened


def test_filters_match_typed_and_string_values(tmp_path):
    """`--filter page_number=3` arrives as the string "3": it must find a page stored as the integer
    3 (what korag writes) and one stored as the text "3"; "true" likewise finds True and "true"."""
    from korag.storage.store import QdrantStore, open_client

    store = QdrantStore(open_client(make_settings(tmp_path)), "t")
    store.ensure_collection("m", 4)
    stored = [{"page_number": 3, "flag": True, "my team": "법무팀"}, {"page_number": "3", "flag": "true"},
              {"page_number": 4, "flag": False}, {"page_number": "33", "flag": "yes"}]
    payloads = [{"page_content": f"text {i}", "metadata": {**m, "doc_id": f"d{i}"}} for i, m in enumerate(stored)]
    store.upsert([f"00000000-0000-0000-0000-00000000000{i}" for i in range(4)], np.eye(4, dtype=np.float32), payloads)

    def found(filters):
        return sorted(c.metadata["doc_id"] for c in store.iter_chunks(filters))

    assert found({"page_number": "3"}) == ["d0", "d1"]
    assert found({"page_number": 3}) == ["d0", "d1"]
    assert found({"flag": "true"}) == ["d0", "d1"]
    assert found({"flag": "false"}) == ["d2"]
    assert found({"page_number": ["3", "4"]}) == ["d0", "d1", "d2"]
    assert found({"page_number": "3", "flag": "false"}) == []
    assert found({"my team": "법무팀"}) == ["d0"]  # a key Qdrant reads only quoted ("invalid JSON path" before)
    with pytest.raises(ValueError, match="cannot filter on metadata key 'a.b'"):
        found({"a.b": "x"})


# -- 8: what a tree walk must not follow or open ------------------------------------------------------
def test_scan_skips_links_out_of_the_tree_and_special_files_with_reasons(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret", encoding="utf-8")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.md").write_text("# a\n\nbody", encoding="utf-8")
    (tree / "x.txt").symlink_to(outside / "secret.txt")
    (tree / "elsewhere").symlink_to(outside, target_is_directory=True)
    (tree / "inside.md").symlink_to(tree / "a.md")  # inside the tree: the same document as a.md
    os.mkfifo(tree / "sub" / "pipe.txt")
    os.mkfifo(tmp_path / "given.md")

    found = {f.source: f for f in scan([str(tree), str(tmp_path / "given.md")])}
    ok = {s for s, f in found.items() if f.problem is None}
    assert ok == {f"{tree}/a.md"}
    assert "outside" in found[f"{tree}/x.txt"].problem and "not followed" in found[f"{tree}/x.txt"].problem
    assert "not followed" in found[f"{tree}/elsewhere"].problem
    assert "FIFO" in found[f"{tree}/sub/pipe.txt"].problem
    assert "FIFO" in found[f"{tmp_path}/given.md"].problem


def test_scan_reports_an_unreadable_folder(tmp_path):
    """Run as an unprivileged user (root reads every folder), in a folder that user can reach."""
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        os.chmod(base, 0o755)
        tree = Path(base) / "tree"
        (tree / "locked").mkdir(parents=True)
        (tree / "locked" / "hidden.md").write_text("# x", encoding="utf-8")
        (tree / "open.md").write_text("# y", encoding="utf-8")
        (tree / "locked").chmod(0o000)
        try:
            as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
            if as_nobody and shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv (util-linux) to drop privileges")
            code = ("import json; from korag.cli.main import scan; "
                    f"print(json.dumps([{{'source': f.source, 'problem': f.problem}} for f in scan([{str(tree)!r}])]))")
            done = subprocess.run([*as_nobody, sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                  timeout=120)
        finally:
            (tree / "locked").chmod(0o755)
    assert done.returncode == 0, done.stderr
    found = {f["source"]: f for f in json.loads(done.stdout)}
    assert found[f"{tree}/open.md"]["problem"] is None
    assert "cannot read folder: Permission denied" in found[f"{tree}/locked"]["problem"]


@pytest.mark.slow
def test_ingest_of_a_tree_never_blocks_nor_leaves_it(tmp_path):
    """Through the real CLI: a FIFO (in the tree or given) fails at once instead of blocking the
    run, a link to a file outside the tree is reported and its content never indexed."""
    (tmp_path / "outside").mkdir()
    docs.make_text(tmp_path / "outside" / "secret.txt", text=docs.SECRET_SENTENCE)
    tree = tmp_path / "tree"
    tree.mkdir()
    docs.make_markdown(tree / "a.md")
    (tree / "x.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    os.mkfifo(tree / "pipe.md")
    os.mkfifo(tmp_path / "fifo.txt")
    env = korag_env(local_env(tmp_path))
    done = korag_cli(["ingest", "tree", "fifo.txt", "--json"], env, tmp_path, timeout=240)
    lines = {line["source"]: line for line in json_lines(done.stdout)}
    assert done.returncode == 1, done.stderr
    assert lines["tree/a.md"]["status"] == "indexed"
    assert lines["tree/x.txt"]["status"] == "failed" and "outside tree" in lines["tree/x.txt"]["error"]
    assert lines["tree/pipe.md"]["status"] == "failed" and "FIFO" in lines["tree/pipe.md"]["error"]
    assert lines["fifo.txt"]["status"] == "failed" and "FIFO" in lines["fifo.txt"]["error"]
    chunks = korag_cli(["chunks", "--json"], env, tmp_path)
    assert "ZEBRA" not in chunks.stdout and "tree/a.md" in chunks.stdout


# -- 11: setup errors: one line, exit 2, nothing half-recorded ------------------------------------------
def _filled_store(tmp_path: Path) -> Path:
    """An embedded store (Qdrant Edge) with a korag-shaped registry collection."""
    from korag.storage.edge_client import EdgeClient
    from korag.storage.registry import DocumentRecord, DocumentRegistry

    path = tmp_path / "data" / "qdrant"
    client = EdgeClient(path)
    registry = DocumentRegistry(client, "korag")
    for i in range(5):
        registry.put(DocumentRecord(doc_id=f"d{i}", source=f"{i}.txt", status="indexed"))
    client.close()
    return path


def test_damaged_embedded_store_files_are_named(tmp_path, monkeypatch, capsys):
    path = _filled_store(tmp_path)
    code, out, _ = run(monkeypatch, capsys, ["docs"], **local_env(tmp_path))
    assert code == 0 and len(out.splitlines()) == 5
    spec = path / "collections" / "korag-documents" / "collection.json"
    spec.write_text("{not json", encoding="utf-8")
    code, _, err = run(monkeypatch, capsys, ["docs"], **local_env(tmp_path))
    assert code == 2 and len(err.splitlines()) == 1
    assert str(spec) in err and "damaged" in err


def test_a_store_of_the_old_local_mode_says_how_to_migrate(tmp_path, monkeypatch, capsys):
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "data" / "qdrant"))
    client.create_collection("korag-documents", vectors_config={})
    client.close()
    code, _, err = run(monkeypatch, capsys, ["docs"], **local_env(tmp_path))
    assert code == 2 and len(err.splitlines()) == 1 and "korag migrate" in err


def test_data_dir_that_is_a_file_is_a_setup_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").write_text("not a folder", encoding="utf-8")
    code, _, err = run(monkeypatch, capsys, ["docs"], **local_env(tmp_path))
    assert code == 2 and len(err.splitlines()) == 1
    assert f"KORAG_DATA_DIR={tmp_path / 'data'} must be a writable directory" in err


def test_unreachable_broker_is_a_setup_error_and_records_nothing(tmp_path, monkeypatch, capsys):
    docs.make_markdown(tmp_path / "a.md")
    monkeypatch.chdir(tmp_path)
    env = {**local_env(tmp_path), "KORAG_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    code, out, err = run(monkeypatch, capsys, ["ingest", "a.md", "--json"], **env)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "KORAG_BROKER_URL" in err and "nothing was queued" in err
    code, out, _ = run(monkeypatch, capsys, ["docs", "--json"], **local_env(tmp_path))
    assert code == 0 and out == ""  # no document left `queued`


@pytest.mark.integration
@pytest.mark.slow
def test_wait_without_a_worker_ends_at_the_timeout(tmp_path, redis_server):
    docs.make_markdown(tmp_path / "a.md")
    env = korag_env({**local_env(tmp_path), "KORAG_BROKER_URL": redis_server.url})
    done = korag_cli(["ingest", "a.md", "--wait", "--timeout", "1", "--json"], env, tmp_path, timeout=120)
    (line,) = json_lines(done.stdout)
    assert done.returncode == 1, done.stderr
    assert line["status"] == "queued" and "no result within 1 s" in line["error"]


# -- 13: smaller ones ------------------------------------------------------------------------------------
def test_sources_are_one_spelling_per_file():
    assert normalize_source("tree/sub/../a.md") == "tree/a.md"
    assert normalize_source("./tree//a.md") == "./tree//a.md"  # only `..` is collapsed
    assert normalize_source("../a.md") == "../a.md"
    nfd = unicodedata.normalize("NFD", "문서/한글.md")
    assert nfd != "문서/한글.md" and normalize_source(nfd) == "문서/한글.md"


def test_unprintable_characters_are_escaped():
    assert printable("evil\x1b[2J\n.md") == "evil\\x1b[2J\\n.md"
    assert printable("규정 2024.pdf") == "규정 2024.pdf"


@pytest.mark.slow
def test_cli_sources_filters_and_messages(tmp_path, monkeypatch, capsys):
    """One embedded store through `korag` in this process: NFC and `..`-free sources, a typed
    page filter, escaped file names, and a "no results" that tells an empty collection apart."""
    monkeypatch.chdir(tmp_path)
    env = local_env(tmp_path)
    code, out, _ = run(monkeypatch, capsys, ["search", "연차휴가", "--mode", "sparse"], **env)
    assert code == 0 and "is empty" in out

    tree = tmp_path / "in"
    (tree / "sub").mkdir(parents=True)
    docs.make_markdown(tree / "a.md")
    docs.make_pdf(tree / "규정.pdf", [["제1조 목적 이 규정은 연차휴가를 정한다."], ["제2조 연차휴가는 15일로 한다."]])
    docs.make_text(tree / unicodedata.normalize("NFD", "한글.txt"), text="한글 파일 이름은 NFD로 저장되었다.")
    docs.make_text(tree / "evil\x1b[2J.txt", text="제어 문자가 든 파일 이름.")

    code, out, _ = run(monkeypatch, capsys, ["ingest", "in/sub/../a.md", "--json"], **env)
    (first,) = json_lines(out)
    assert code == 0 and first["source"] == "in/a.md"
    code, out, _ = run(monkeypatch, capsys, ["ingest", "in"], **env)
    # a name holding ESC is refused as a source (korag.rules.source_problem), shown escaped; the rest go in
    assert code == 1
    assert "\x1b" not in out and "in/evil\\x1b[2J.txt" in out and "U+001B" in out
    assert f"unchanged in/a.md  ({first['chunks']} chunks, doc_id {first['doc_id']})" in out  # one document

    code, out, _ = run(monkeypatch, capsys, ["search", "한글 파일", "--json", "--filter", "source=in/한글.txt"], **env)
    found = json.loads(out)
    assert code == 0 and found["results"] and found["notice"] is None
    assert {r["metadata"]["source"] for r in found["results"]} == {"in/한글.txt"}

    code, out, _ = run(monkeypatch, capsys, ["search", "연차휴가", "--json", "--filter", "page_number=1"], **env)
    pages = {(r["metadata"]["source"], r["metadata"]["page_number"]) for r in json.loads(out)["results"]}
    assert code == 0 and pages == {("in/규정.pdf", 1)}  # stored as the integer 1, asked as the text "1"

    code, out, _ = run(monkeypatch, capsys, ["search", "연차휴가", "--filter", "page_number=99"], **env)
    assert code == 0 and out.strip() == "no results"


def test_long_query_is_cut_for_the_dense_channel_only(tmp_path, minilm):
    """A query over the model's limit is answered: dense embeds the part that fits, keyword search
    sees all of it (a term only at the end still finds its chunk), and the response says so."""
    from ingest.pipeline import Pipeline
    from korag.storage.store import store_session
    from retrieval.search import Retriever

    settings = make_settings(tmp_path, embedding_model=offline_model_path())
    (tmp_path / "a.md").write_text("# 휴가\n\n연차휴가는 15일로 한다.", encoding="utf-8")
    (tmp_path / "b.md").write_text("# 보안\n\n금고 비밀번호는 ZEBRAQUARTZ 이다.", encoding="utf-8")
    long_query = "이 질문은 아주 길게 늘어난 문장입니다. " * 120 + "ZEBRAQUARTZ"
    with store_session(settings) as store:
        pipeline = Pipeline.build(minilm, store, settings)
        for name in ("a.md", "b.md"):
            assert pipeline.ingest_path(tmp_path / name, name).status == "indexed"
        retriever = Retriever(minilm, store)
        fit = minilm.fit_query(long_query)
        assert fit.truncated and fit.tokens <= minilm.info.max_input_tokens < fit.total_tokens
        for mode in ("dense", "hybrid"):
            response = retriever.search_with_notes(long_query, k=2, mode=mode)
            assert response.results
            assert response.notice == f"query cut to {fit.tokens} of {fit.total_tokens} tokens for the dense channel"
        assert retriever.search(long_query, k=1, mode="sparse")[0].source == "b.md"
        assert isinstance(retriever.search(long_query, k=2, mode="hybrid"), list)
        assert retriever.search_with_notes("연차휴가", k=1).notice is None


def test_model_path_with_a_trailing_slash_is_the_same_model(tmp_path, minilm):
    from ingest.embedder import Embedder
    from korag.settings import Settings

    again = Embedder.load(Settings(embedding_model=offline_model_path() + "/", embedding_device="cpu"))
    assert again.info.name == minilm.info.name == offline_model_path()


def test_qdrant_api_key_is_never_shown(tmp_path):
    from korag.storage.store import open_client
    from workers.app import create_app

    settings = make_settings(tmp_path, qdrant_url="http://127.0.0.1:9", qdrant_api_key="sekrit-key",
                             broker_url="redis://127.0.0.1:9/0")
    assert "sekrit-key" not in repr(settings) and "sekrit-key" not in str(settings.model_dump())
    app = create_app(settings)
    assert "sekrit-key" not in repr(app.conf.korag_settings) and "sekrit-key" not in str(app.conf.humanize())
    assert settings.qdrant_api_key.get_secret_value() == "sekrit-key"
    with warnings.catch_warnings():  # no server here: qdrant-client warns about http and the version check
        warnings.simplefilter("ignore", UserWarning)
        open_client(settings).close()  # the client gets the plain key
    assert make_settings(tmp_path, qdrant_api_key="").qdrant_api_key is None


def test_every_third_party_import_is_a_declared_dependency():
    """korag's own code imports only what pyproject.toml declares (torch excepted, see README)."""
    import importlib.metadata as md
    import re

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in project["dependencies"]}
    distributions = md.packages_distributions()
    local = {"korag", "ingest", "retrieval", "workers", "api", "bench", "tests"}
    missing = set()
    for folder in ("korag", "ingest", "retrieval", "workers", "api"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in local or top == "torch":
                        continue
                    dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                    if not dists & declared:
                        missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_deprecation_warnings_are_not_hidden_wholesale():
    """Python's warning about forking a multi-threaded process, and korag's own deprecations,
    must reach the test output: only named third-party warnings may be ignored."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    for entry in config.get("filterwarnings", []):
        action, message, category, module = (entry.split(":") + ["", "", "", ""])[:4]
        if action.strip() == "ignore":
            assert message.strip() or module.strip(), f"{entry!r} ignores {category or 'every warning'} everywhere"
