"""Decode plain-text bytes, including Korea's legacy encodings (EUC-KR and its superset CP949).

Text that is valid UTF-8 or CP949 decodes as is (UTF-8 first). Otherwise a few bad bytes do not
cost the whole file: when the bytes are overwhelmingly UTF-8 (or CP949), each undecodable byte
becomes U+FFFD and is counted, so the caller can say so. Text in another encoding goes to
charset-normalizer. Bytes that are mostly undecodable (over :data:`MAX_REPLACED_SHARE`) are
refused, naming the byte offset of the first bad byte.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from ingest.parsing.blocks import Refusal

MAX_REPLACED_SHARE = 0.10  # more undecodable bytes than this: not text in a known encoding

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# CP949 is a strict superset of EUC-KR, so one attempt covers both.
_STRICT_ORDER = ("utf-8", "cp949")
_ESCAPED = re.compile("[\udc80-\udcff]")  # one per undecodable byte under "surrogateescape"
_ASCII = bytes(range(128))


@dataclass(frozen=True)
class DecodedText:
    text: str
    encoding: str
    replaced: int = 0  # undecodable bytes, each replaced by U+FFFD
    first_bad: int | None = None  # byte offset of the first of them

    def __post_init__(self) -> None:
        if (self.replaced == 0) != (self.first_bad is None):
            raise ValueError("first_bad is given exactly when bytes were replaced")


def decode_text(data: bytes) -> tuple[str, str]:
    """Return ``(text, encoding)``; see :func:`decode` for the count of replaced bytes."""
    decoded = decode(data)
    return decoded.text, decoded.encoding


def decode(data: bytes) -> DecodedText:
    """Decode ``data``. Raises :class:`Refusal` when it is mostly not text in any encoding tried."""
    lenient: list[DecodedText] = []
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            decoded = _strict_or_lenient(data, encoding, lenient)
            if decoded.replaced > _allowed(data):
                raise _refusal([decoded], len(data))
            return decoded
    for encoding in _STRICT_ORDER:
        decoded = _strict_or_lenient(data, encoding, lenient)
        if not decoded.replaced:
            return decoded
    best = min(lenient, key=lambda d: d.replaced)  # UTF-8 first on a tie
    if best.replaced <= _allowed(data) and _non_ascii(data) - best.replaced >= best.replaced * 9:
        return best  # overwhelmingly valid: a few damaged bytes in a UTF-8 (or CP949) file
    from charset_normalizer import from_bytes  # lazy: only to guess an encoding

    match = from_bytes(data).best()
    if match is not None:
        return DecodedText(str(match), match.encoding)
    if best.replaced <= _allowed(data):
        return best
    raise _refusal(lenient, len(data))


def _refusal(attempts: list[DecodedText], size: int) -> Refusal:
    views = " and ".join(
        f"{d.replaced} as {d.encoding.upper()} (the first at byte offset {d.first_bad})" for d in attempts
    )
    return Refusal(
        f"not text in a known encoding: of its {size} bytes, {views} are invalid; "
        f"at most {MAX_REPLACED_SHARE:.0%} may be"
    )


def _strict_or_lenient(data: bytes, encoding: str, lenient: list[DecodedText]) -> DecodedText:
    """``data`` decoded strictly, or else with each bad byte replaced (also appended to ``lenient``)."""
    try:
        return DecodedText(data.decode(encoding), encoding)
    except UnicodeDecodeError as exc:
        first_bad = exc.start + (len(codecs.BOM_UTF8) if encoding == "utf-8-sig" else 0)
    try:
        text, replaced = _ESCAPED.subn("\ufffd", data.decode(encoding, "surrogateescape"))
    except UnicodeDecodeError:  # UTF-16/32 cannot escape every byte: count the replacement runs
        text = data.decode(encoding, "replace")
        replaced = text.count("\ufffd") - data.decode(encoding, "ignore").count("\ufffd")
    decoded = DecodedText(text, encoding, max(replaced, 1), first_bad)
    lenient.append(decoded)
    return decoded


def _allowed(data: bytes) -> float:
    return len(data) * MAX_REPLACED_SHARE


def _non_ascii(data: bytes) -> int:
    return len(data.translate(None, _ASCII))

