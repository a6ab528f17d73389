"""The README's Python example runs as written (with the offline model, in a scratch folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import documents as docs
from tests.conftest import korag_env, offline_model_path

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_the_python_example_runs_and_cites_its_source(tmp_path):
    text = README.read_text()
    example = re.search(r"From Python:\n\n```python\n(.*?)```", text, re.S).group(1)
    assert "Retriever.from_settings" in example  # the example honours KORAG_* settings
    docs.make_pdf(tmp_path / "규정.pdf", [["제1장 총칙", "이 규정은 공포한 날부터 시행한다."], [docs.SECRET_SENTENCE]])
    script = example + "\nprint(prompt_context)\nprint(len(docs))\n"
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data"),
                     "PYTHONPATH": str(README.parent)})
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1] 규정.pdf, p. " in done.stdout
