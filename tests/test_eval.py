"""`korag eval` on a small BEIR-layout dataset built here."""

from __future__ import annotations

import json

import pytest

from tests.conftest import korag_cli, korag_env, offline_model_path
from tests.test_hybrid import LAWS

pytestmark = pytest.mark.slow


def _dataset(folder):
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for i, (name, text) in enumerate(LAWS.items()):
            out.write(json.dumps({"_id": f"{name} p.{i}", "title": name, "text": text}, ensure_ascii=False) + "\n")
    queries = {"q1": "임대차 보증금 보호", "q2": "대법원장 임명", "q3": "연차 유급휴가"}
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
        for qid, text in queries.items():
            out.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\t주택임대차보호법.txt p.3\t1\nq2\t법원조직법.txt p.0\t1\nq3\t근로기준법.txt p.2\t1\n",
        encoding="utf-8",
    )
    return folder


def test_eval_reports_every_mode_and_tunes(tmp_path):
    dataset = _dataset(tmp_path / "mini")
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data")})
    done = korag_cli(["eval", str(dataset), "--json", "-k", "3", "--tune"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dataset"] == "mini" and set(report["modes"]) == {"dense", "sparse", "hybrid"}
    for mode in report["modes"].values():
        assert set(mode) == {"ndcg@1", "ndcg@3", "ndcg@3", "recall@3", "mrr@3", "p50_ms", "p95_ms", "context_chars", "short"}
        assert 0 < mode["p50_ms"] <= mode["p95_ms"]
    assert report["modes"]["sparse"]["ndcg@3"] == 1.0
    assert report["modes"]["hybrid"]["ndcg@3"] >= report["modes"]["sparse"]["ndcg@3"] - 0.02
    assert report["ingest"]["documents"] == 4 and report["ingest"]["chunks"] == 4
    assert report["tune"] and report["tune"][0]["ndcg@3"] >= report["tune"][-1]["ndcg@3"]
    assert {row["method"] for row in report["tune"]} == {"rrf", "convex"}
    assert report["fusion"]["method"] == "convex"

    missing = korag_cli(["eval", str(tmp_path / "nope")], env, tmp_path)
    assert missing.returncode == 2 and "not a BEIR-layout dataset" in missing.stderr


MISS_CORPUS = {
    "annual": "연차 유급휴가는 근로자의 권리이다. 연차 유급휴가는 15일이다. 연차 유급휴가를 주어야 한다.",
    "wages": "사용자는 휴가 기간에 대하여 통상임금을 지급한다. 유급휴가의 임금은 통상임금으로 한다.",
    "court": "대법원장은 국회의 동의를 받아 대통령이 임명한다.",
}


def _miss_dataset(folder):
    """Three passages; q-second's gold passage (wages) is the second-best sparse match, q-absent's
    (court) shares no term with its question, q-hit is answered first."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for pid, text in MISS_CORPUS.items():
            out.write(json.dumps({"_id": pid, "title": "", "text": text}, ensure_ascii=False) + "\n")
    queries = {"q-second": "연차 유급휴가", "q-absent": "연차 유급휴가 일수", "q-hit": "대법원장 임명"}
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
        for qid, text in queries.items():
            out.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq-second\twages\t1\nq-absent\tcourt\t1\nq-hit\tcourt\t1\n", encoding="utf-8")
    return folder


def test_eval_lists_the_misses_with_the_rank_they_got(tmp_path):
    """`korag eval --json` lists per mode each gold passage outside the top k with the rank it got
    (null when the search did not return it at all) and the top hit; `--failures N` prints the first N."""
    dataset = _miss_dataset(tmp_path / "misses")
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data")})
    done = korag_cli(["eval", str(dataset), "--json", "-k", "1", "--modes", "sparse"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    misses = {m["query_id"]: m for m in json.loads(done.stdout)["misses"]["sparse"]}
    assert set(misses) == {"q-second", "q-absent"}
    assert misses["q-second"] == {
        "query_id": "q-second", "question": "연차 유급휴가", "gold_id": "wages", "rank": 2,
        "top_id": "annual", "top_text": MISS_CORPUS["annual"]}
    assert misses["q-absent"]["rank"] is None and misses["q-absent"]["top_id"] == "annual"

    text = korag_cli(["eval", str(dataset), "-k", "1", "--modes", "sparse", "--failures", "1"], env, tmp_path)
    assert text.returncode == 0, text.stderr
    assert "sparse: 2 gold passage(s) outside the top 1" in text.stdout
    assert "gold wages at rank 2; top hit annual" in text.stdout
    assert "q-absent" not in text.stdout  # only the first one
