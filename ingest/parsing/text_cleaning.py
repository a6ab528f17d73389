"""Text clean-up applied to every block before chunking: NFC, no private-use glyphs, no broken
surrogates, no control characters (newlines and tabs stay)."""

from __future__ import annotations

import re
import unicodedata

# Hancom (and some PDF fonts) put bullets and symbols in the private-use areas: BMP U+E000–U+F8FF
# and the supplementary planes 15 and 16. Lone surrogates come from broken UTF-16 decoding.
_PRIVATE_USE = re.compile("[\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \u00a0\u3000]+")


def clean_text(text: str) -> str:
    text = _SURROGATES.sub("", text)
    text = _PRIVATE_USE.sub("", text)
    text = _CONTROLS.sub("", text)
    text = unicodedata.normalize("NFC", text)
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()
