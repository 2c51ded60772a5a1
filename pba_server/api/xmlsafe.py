"""Hardened XML parsing for both endpoints.

No DTDs at all (so no external entities, no entity expansion: XXE, billion
laughs and quadratic blowup all stop here), no network, libxml2's own limits on
text and depth kept on (no ``huge_tree``), and our own nesting limit, far
below the 10,000 levels of the classic attack.

The size cap alone does not bound memory: 4 MB of ``<a/>`` is a million
elements, ~120 MB as a libxml2 tree. So markup is counted before parsing
(one C-speed scan) and the depth is checked by XPath inside libxml2, never
by walking the tree in Python (which cost seconds and ~130 MB more there).

Counting ``<`` does not bound attributes: one element with 358,751 of them
fits in 4 MB and cost libxml2 ~100 MB and spyne's validation ~500 MB. So
:func:`prescan` bounds, with byte-level scans that allocate nothing per
match, what libxml2 would build: attributes per element and in total,
namespace declarations, and the longest run of text (or one tag). It runs
before any parse, and before the streaming passes that read the credentials
of a request that has none in its headers (:func:`soap_header`,
:func:`xmlrpc_method_name`), which stop where the credentials end.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from lxml import etree

from pba_server.core.errors import MalformedRequest, PbaError, RequestTooComplex

MAX_DEPTH = 64
# '<' characters: start, end and empty tags (a CDATA section's '<' counts too)
MAX_TAGS = 100_000
MAX_ATTRIBUTES_PER_ELEMENT = 64
MAX_ATTRIBUTES = 20_000  # in the whole document
MAX_NAMESPACE_DECLARATIONS = 256  # in the whole document
MAX_TEXT_BYTES = 1024 * 1024  # one text node, or one tag with its attributes

# One attribute as libxml2 accepts it, or wider: any name, whitespace around
# '=', a quoted value (which may not hold '<'). Wider is safe: it can only
# count too much (an attribute-like run inside a comment), never too little.
_ATTR = rb"""\s+[^\s=<>"']+\s*=\s*(?:"[^"<]*"|'[^'<]*')"""
_TOO_MANY_ON_ONE = re.compile(rb"<[^\s<>/!?]+(?:%s){%d}" % (_ATTR, MAX_ATTRIBUTES_PER_ELEMENT + 1))
# More than MAX_ATTRIBUTES '=' followed by a quote (each attribute has one):
# anchored and possessive, so it runs in C in one pass, with no backtracking.
_TOO_MANY_IN_ALL = re.compile(
    rb"""(?s)(?>(?:[^=]*+=(?!\s*+["']))*+[^=]*+=\s*+["']){%d}""" % (MAX_ATTRIBUTES + 1)
)
_XMLNS_RE = re.compile(rb"\sxmlns(?::[^\s=<>]*)?\s*=")
# runs of at most MAX_TEXT_BYTES between two '<': it stops before a longer one
_SHORT_RUNS = re.compile(rb"(?>[^<]{0,%d}<)*+" % MAX_TEXT_BYTES)
_STREAM_CHUNK = 64 * 1024

_local = threading.local()


def _parser() -> etree.XMLParser:
    # XMLParser objects are not thread-safe; one per worker thread.
    p = getattr(_local, "parser", None)
    if p is None:
        p = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_pis=True,
            remove_comments=True,
            collect_ids=False,
        )
        _local.parser = p
    return p


def _too_deep() -> etree.XPath:
    x = getattr(_local, "too_deep", None)
    if x is None:
        x = etree.XPath("boolean(" + "/*" * (MAX_DEPTH + 1) + ")")
        _local.too_deep = x
    return x


def _more_than(pattern: re.Pattern[bytes], body: bytes, limit: int) -> bool:
    """Whether ``pattern`` matches more than ``limit`` times (stops counting there)."""
    return any(n > limit for n, _m in enumerate(pattern.finditer(body), 1))


def prescan(body: bytes) -> None:
    """Refuse, before any parse, a body libxml2 would spend far more than its
    size on. Costs a few milliseconds on 4 MB, in C (regular expressions
    anchored and possessive: no backtracking), and allocates nothing."""
    if body.count(b"<") > MAX_TAGS:
        raise MalformedRequest(f"too many XML elements (over {MAX_TAGS} tags)")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise MalformedRequest("DTDs and entity declarations are not allowed")
    # each attribute needs an '=': counting those is free and usually ends it;
    # the total first, which bounds the cost of the per-element search
    equals = body.count(b"=")
    if equals > MAX_ATTRIBUTES and _TOO_MANY_IN_ALL.match(body):
        raise RequestTooComplex(f"more than {MAX_ATTRIBUTES} XML attributes")
    if equals > MAX_ATTRIBUTES_PER_ELEMENT and _TOO_MANY_ON_ONE.search(body):
        raise RequestTooComplex(
            f"an XML element has more than {MAX_ATTRIBUTES_PER_ELEMENT} attributes"
        )
    if body.count(b"xmlns") > MAX_NAMESPACE_DECLARATIONS and _more_than(
        _XMLNS_RE, body, MAX_NAMESPACE_DECLARATIONS
    ):
        raise RequestTooComplex(
            f"more than {MAX_NAMESPACE_DECLARATIONS} XML namespace declarations"
        )
    runs = _SHORT_RUNS.match(body)  # always matches (maybe nothing)
    if runs is not None and len(body) - runs.end() > MAX_TEXT_BYTES:
        raise RequestTooComplex(f"an XML text or tag is longer than {MAX_TEXT_BYTES} bytes")


_OVERLAP = 4096


class ChunkScan:
    """The :func:`prescan` limits, checked on a body as it arrives, so the
    bomb is refused after its first chunk instead of after 4 MB (and before
    it is written anywhere). Only a fast first line: a count a chunk
    boundary splits may be missed here, never in :func:`prescan`, which
    still runs on every whole body."""

    def __init__(self) -> None:
        self._tail = b""
        self._tags = 0
        self._values = 0
        self._namespaces = 0

    def feed(self, chunk: bytes) -> PbaError | None:
        window = self._tail + chunk
        self._tags += chunk.count(b"<")
        if self._tags > MAX_TAGS:
            return MalformedRequest(f"too many XML elements (over {MAX_TAGS} tags)")
        if b"<!DOCTYPE" in window or b"<!ENTITY" in window:
            return MalformedRequest("DTDs and entity declarations are not allowed")
        # '="' and "='" only (a subset of what prescan counts, so never
        # stricter), by memchr-speed counts: this runs on the reactor
        self._values += chunk.count(b'="') + chunk.count(b"='")
        if self._values > MAX_ATTRIBUTES:
            return RequestTooComplex(f"more than {MAX_ATTRIBUTES} XML attributes")
        if b"xmlns" in chunk:
            # matches wholly inside the old tail were counted with the last chunk
            overlap = self._tail[-64:]
            self._namespaces += len(_XMLNS_RE.findall(overlap + chunk)) - len(
                _XMLNS_RE.findall(overlap)
            )
        if self._namespaces > MAX_NAMESPACE_DECLARATIONS:
            return RequestTooComplex(
                f"more than {MAX_NAMESPACE_DECLARATIONS} XML namespace declarations"
            )
        if window.count(b"=") > MAX_ATTRIBUTES_PER_ELEMENT and _TOO_MANY_ON_ONE.search(window):
            return RequestTooComplex(
                f"an XML element has more than {MAX_ATTRIBUTES_PER_ELEMENT} attributes"
            )
        self._tail = window[-_OVERLAP:]
        return None


def _stream(body: bytes, stop: Callable[[str, etree._Element], bool]) -> etree._Element | None:
    """Parse ``body`` as it comes, in chunks, until ``stop(event, element)``;
    the root element then (complete up to there), or None if the document
    ended first or is not well-formed. Only what precedes the stop is parsed."""
    parser = etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,
        collect_ids=False,
    )
    root: etree._Element | None = None
    depth = 0
    try:
        for offset in range(0, len(body), _STREAM_CHUNK):
            parser.feed(body[offset : offset + _STREAM_CHUNK])
            for event, el in parser.read_events():
                if root is None:
                    root = el
                depth += 1 if event == "start" else -1
                if depth > MAX_DEPTH:
                    raise MalformedRequest(f"XML is nested deeper than {MAX_DEPTH} levels")
                if stop(event, el):
                    return root
    except etree.XMLSyntaxError:
        return None
    return None


def soap_header(body: bytes, envelope_ns: str) -> etree._Element | None:
    """The SOAP Envelope with its Header, parsed up to where the Body starts
    (the Body itself is not read); None when there is no such Envelope."""
    body_tag = f"{{{envelope_ns}}}Body"
    return _stream(body, lambda event, el: event == "start" and el.tag == body_tag)


def xmlrpc_method_name(body: bytes) -> str | None:
    """An XML-RPC call's methodName, read without parsing its parameters."""
    root = _stream(body, lambda event, el: event == "end" and el.tag == "methodName")
    if root is None or root.tag != "methodCall":
        return None
    name = root.findtext("methodName")
    return name.strip() if name else None


def parse(body: bytes) -> etree._Element:
    prescan(body)
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise MalformedRequest(f"malformed XML: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MalformedRequest("DTDs and entity declarations are not allowed")
    if _too_deep()(tree):
        raise MalformedRequest(f"XML is nested deeper than {MAX_DEPTH} levels")
    return root
