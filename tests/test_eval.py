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
        assert set(mode) == {"ndcg@1", "ndcg@3", "ndcg@3", "recall@3", "mrr@3", "p50_ms", "p95_ms"}
        assert 0 < mode["p50_ms"] <= mode["p95_ms"]
    assert report["modes"]["sparse"]["ndcg@3"] == 1.0
    assert report["modes"]["hybrid"]["ndcg@3"] >= report["modes"]["sparse"]["ndcg@3"] - 0.02
    assert report["ingest"]["documents"] == 4 and report["ingest"]["chunks"] == 4
    assert report["tune"] and report["tune"][0]["ndcg@3"] >= report["tune"][-1]["ndcg@3"]

    missing = korag_cli(["eval", str(tmp_path / "nope")], env, tmp_path)
    assert missing.returncode == 2 and "not a BEIR-layout dataset" in missing.stderr
