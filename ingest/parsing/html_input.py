"""HTML through unstructured without silent loss.

unstructured parses HTML with libxml2, which stops at 256 levels of nesting and silently drops
everything after that point, and then walks the tree recursively, which fails a few hundred
levels deeper. :func:`partition_html_fully` therefore:

1. parses the page here with libxml2's raised limits (``huge_tree``: 2,048 levels) and refuses
   a page nested deeper than that: libxml2 cannot read past the limit, and korag never indexes
   part of a document as if it were the whole;
2. flattens subtrees nested deeper than :data:`FLAT_DEPTH` levels (runs of unclosed ``<font>``
   or ``<div>``) into one paragraph per run of text between block-level tags; pages within that
   depth reach unstructured unchanged;
3. counts the page's visible characters with a flat, streaming tokeniser (the standard
   library's ``html.parser``: no tree, no depth limit), leaving out what unstructured leaves out
   on purpose (scripts, styles, forms, navigation and the other elements its parser registers as
   removed; everything outside ``<main>`` when there is one), and refuses the document when
   unstructured's elements hold less than :data:`MIN_KEPT` of them (it also drops one-character
   paragraphs and leading bullets on purpose, hence the margin).
"""

from __future__ import annotations

from functools import cache
from html.parser import HTMLParser

from lxml import etree

from ingest.parsing.blocks import Refusal

FLAT_DEPTH = 96  # deeper subtrees are flattened; unstructured's recursion copes with a few hundred
MIN_KEPT = 0.9  # share of the visible characters unstructured's elements must hold; it drops
_SLACK = 8  # one-character paragraphs and leading bullets on purpose, a few characters at most
_HUGE_DEPTH = 2048  # libxml2's nesting limit with XML_PARSE_HUGE
_STRIPPED = ("del", "link", "meta", "noscript", "script", "style")  # stripped, text and all, by unstructured
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_BLOCKS = frozenset(
    "address article aside blockquote body br center dd details dialog dir div dl dt fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr html li main menu nav ol p pre section summary "
    "table tbody td tfoot th thead tr ul".split()
)


def partition_html_fully(text: str) -> list:
    """unstructured's elements of the page ``text``, all of its visible text included.

    Raises :class:`Refusal` when the page is nested too deeply to read or text went missing.
    """
    from unstructured.partition.html import partition_html  # lazy: on its format's first document

    if not text.strip():
        return []
    elements = partition_html(text=_flattened(text), languages=[""])  # no language detection: unread metadata
    visible = visible_chars(text)
    kept = sum(_chars(e.text or "") for e in elements)
    if kept < visible * MIN_KEPT - _SLACK:
        raise Refusal(
            f"the HTML parser kept only {kept} of the page's {visible} visible characters "
            "(non-space, outside scripts, forms and navigation); refused rather than indexed in part"
        )
    return elements


@cache
def _removed_tags() -> frozenset[str]:
    """Tags whose content unstructured's HTML parser drops on purpose (its own registry)."""
    from unstructured.partition.html import parser  # lazy: on its format's first document

    removed = (parser.RemovedPhrasing, parser.RemovedBlock)
    registry = parser.element_class_lookup.get_namespace(None)
    tags = {tag.decode() if isinstance(tag, bytes) else tag for tag, cls in registry.items() if issubclass(cls, removed)}
    return frozenset(tags | set(_STRIPPED))


def _chars(text: str) -> int:
    return len("".join(text.split()))


# -- 1 and 2: parse without the depth cap, flatten what is too deep ------------------------------------
def _flattened(text: str) -> str:
    parser = etree.HTMLParser(remove_comments=True, remove_pis=True, huge_tree=True)
    try:
        root = etree.fromstring(text, parser)
    except ValueError:  # a str with an XML encoding declaration; unstructured does the same
        root = etree.fromstring(text.encode("utf-8"), parser)
    if root is None:
        return text
    deep, depth = _elements_at_depth(root, FLAT_DEPTH)
    if depth >= _HUGE_DEPTH - 1 or any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
        raise Refusal(
            f"HTML nested {_HUGE_DEPTH} or more levels deep: the parser cannot read past that depth, "
            "so the rest of the page would be lost"
        )
    if not deep:
        return text
    for element in deep:
        _flatten(element)
    return etree.tostring(root, method="html", encoding="unicode")


def _elements_at_depth(root, depth: int) -> tuple[list, int]:
    """Elements exactly ``depth`` levels below the root that have children, and the tree's
    depth (iterative: the tree may be 2,048 levels deep)."""
    found = []
    deepest = 0
    stack = [(root, 0)]
    while stack:
        element, level = stack.pop()
        deepest = max(deepest, level)
        if level == depth and len(element):
            found.append(element)
        stack.extend((child, level + 1) for child in element)
    return found, deepest


def _flatten(element) -> None:
    """Replace ``element``'s subtree with one ``<p>`` per run of text between block-level tags,
    leaving out the content of elements unstructured drops."""
    removed = _removed_tags()
    paragraphs: list[str] = []
    current: list[str] = []

    def cut() -> None:
        joined = " ".join("".join(current).split())
        if joined:
            paragraphs.append(joined)
        current.clear()

    walker = etree.iterwalk(element, events=("start", "end"))
    for event, node in walker:
        tag = node.tag if isinstance(node.tag, str) else ""
        if tag in _BLOCKS:
            cut()
        if event == "start":
            if tag in removed:
                walker.skip_subtree()
            elif node.text:
                current.append(node.text)
        elif node is not element and node.tail:
            current.append(node.tail)
    cut()
    tail = element.tail
    element.clear()  # text, tail, attributes and children
    element.tag = "div"
    element.tail = tail
    for paragraph in paragraphs:
        etree.SubElement(element, "p").text = paragraph


# -- 3: the visible text, counted flat ----------------------------------------------------------------------
class _VisibleText(HTMLParser):
    def __init__(self, removed: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.removed = removed
        self.skipping = 0  # open removed elements
        self.total = 0
        self.in_main = 0  # open <main> elements of the first one
        self.main_seen = False
        self.main_total = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "body":
            self.skipping = 0  # an unclosed <head> (or <title>) ends here
        if tag in _VOID:
            return
        if tag in self.removed:
            self.skipping += 1
        if tag == "main" and (self.in_main or not self.main_seen):
            self.main_seen = True
            self.in_main += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.removed and self.skipping:
            self.skipping -= 1
        if tag == "main" and self.in_main:
            self.in_main -= 1

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        count = _chars(data)
        self.total += count
        if self.in_main:
            self.main_total += count


def visible_chars(text: str) -> int:
    """Non-space characters a reader of the page sees, less what unstructured drops on purpose."""
    counter = _VisibleText(_removed_tags())
    counter.feed(text)
    counter.close()
    return counter.main_total if counter.main_seen else counter.total
