"""Every bound on what a registry or an artifact may make ociart read, in one place.

A registry is not trusted (docs/transport.md, "Threat model"): no response body is read without a cap, and no
pagination runs without a page, entry and time limit. Each kind of response has its own limit here; the code that
reads it names the limit in its error, so an endless or oversized body fails with one line naming the cap instead
of filling memory.
"""

from __future__ import annotations

#: A manifest or index (also an OCI referrers-API page, which is an index): distribution's own limit.
MANIFEST_BYTES = 4 << 20
#: A token-service response.
TOKEN_BYTES = 4 << 20
#: The body of an error response (401, 404, 5xx, …): only its OCI error codes and messages are used; the rest of a
#: longer body is not read (the connection is closed).
ERROR_BODY_BYTES = 64 << 10
#: Any other response read whole (HEAD/PUT/POST/PATCH/DELETE answers, probes): they are expected to be empty.
SMALL_BODY_BYTES = 64 << 10
#: One page of a tag list.
TAG_PAGE_BYTES = 4 << 20
#: The config blob ``inspect`` reads and parses.
CONFIG_BYTES = 4 << 20
#: Pagination (tag lists, referrers pages): at most this many pages, this many entries in all, and this many seconds
#: from the first request, whichever comes first. A registry that keeps sending ``Link: rel="next"`` gets an error.
PAGES = 10_000
PAGE_ENTRIES = 1_000_000
PAGINATION_SECONDS = 120.0

# -- what an artifact may make ociart write or walk ---------------------------------------------------------------
#: A gzip tar layer may restore at most this many times its compressed size (without ``--max-size``); an
#: uncompressed tar layer its own size, a raw layer its declared size.
GZIP_RATIO = 100
#: A referrer graph or index tree that ``copy`` follows: at most this deep and this many manifests.
GRAPH_DEPTH = 64
GRAPH_MANIFESTS = 10_000
#: A lineage query stops with an error beyond this many nodes.
LINEAGE_NODES = 10_000
#: How deep ``ls`` follows indexes nested in indexes.
INDEX_DEPTH = 4
#: One audit-log line (ociart/audit.py): longer lines are refused when written and when read.
AUDIT_LINE_BYTES = 64 << 10
