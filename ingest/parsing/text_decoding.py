"""Decode plain-text bytes, including Korea's legacy encodings (EUC-KR and its superset CP949)."""

from __future__ import annotations

import codecs

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# CP949 is a strict superset of EUC-KR, so one attempt covers both.
_STRICT_ORDER = ("utf-8", "cp949")


def decode_text(data: bytes) -> tuple[str, str]:
    """Return ``(text, encoding)``. Raises ``UnicodeDecodeError`` for undecodable bytes."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding), encoding
    for encoding in _STRICT_ORDER:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise UnicodeDecodeError("unknown", data[:16], 0, min(len(data), 16), "no text encoding fits")
    return str(best), best.encoding
