"""The URLs a Wikipedia XML dump cites: the positives of LLaMA's quality classifier are the pages they
point to ("pages used as references in Wikipedia").

The rule is RedPajama v1's (data_prep/cc/classifier/extract_urls.py:29-40, rp_v1 45b37c2), on the raw
lines of the dump (wikitext inside the XML is entity-escaped, `<ref>` is `&lt;ref&gt;`): on each line,
the span from the first `&lt;ref&gt` to the last `&lt;/ref&gt;`, and in it every match of their URL
pattern. Matching the raw line means a bare `<ref>` must open the span (a named `<ref name=..>` alone
does not), a reference spread over several lines is missed, and a query string's `&amp;` ends the URL
at `&amp` -- all as the reference did. `template_urls=True` adds, on every line, the `url=` parameter
of citation templates (`{{cite web |url=...}}`, entity-unescaped), outside `<ref>` too (e.g. in
"Further reading").

`url_key` and `domain_key` say when a crawled page "is" a cited URL: RedPajama fetched the cited URLs
themselves, so its pages were the cited pages; a crawl that was not made from the list can only match
them by URL (scheme, `www.`, a trailing slash and the fragment ignored) or, as a proxy, by domain.
"""
from __future__ import annotations

import bz2
import gzip
import html
import re
from typing import Iterator
from urllib.parse import urlsplit

REF_SPAN = re.compile("&lt;ref&gt(.*)&lt;/ref&gt;")  # extract_urls.py:32
URL = re.compile(  # extract_urls.py:35
    r"\b(?:https?|telnet|gopher|file|wais|ftp):[\w/#~:.?+=&%@!\-.:?\\-]+?(?=[.:?\-]*(?:[^\w/#~:.?+=&%@!\-.:?\-]|$))"
)
TEMPLATE_URL = re.compile(r"\|\s*url\s*=\s*(https?://[^\s|}<\]]+)", re.IGNORECASE)


def open_dump(path: str):
    """A dump as text lines (bz2, gzip or plain); undecodable bytes are ignored, as the reference did."""
    opener = bz2.open if path.endswith(".bz2") else gzip.open if path.endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8", errors="ignore")


def ref_urls(line: str) -> list[str]:
    """The reference's URLs of one raw dump line."""
    span = REF_SPAN.search(line)
    return URL.findall(span.group(0)) if span else []


def template_urls(line: str) -> list[str]:
    return TEMPLATE_URL.findall(html.unescape(line))


def cited_urls(path: str, counts: dict, with_templates: bool = False) -> Iterator[str]:
    """Every cited URL of a dump, in order, with repeats; `counts` gets lines, ref_urls, template_urls."""
    with open_dump(path) as f:
        for line in f:
            counts["lines"] = counts.get("lines", 0) + 1
            urls = ref_urls(line)
            counts["ref_urls"] = counts.get("ref_urls", 0) + len(urls)
            yield from urls
            if with_templates:
                extra = template_urls(line)
                counts["template_urls"] = counts.get("template_urls", 0) + len(extra)
                yield from extra


def domain_key(url: str) -> str | None:
    """Lowercase host without `www.` and port; None for a URL without one."""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    return host[4:] if host.startswith("www.") else host


def url_key(url: str) -> str | None:
    """domain_key + path (trailing `/` dropped) + query: the same page over http/https, with or without
    `www.`, a trailing slash or a fragment."""
    domain = domain_key(url)
    if domain is None:
        return None
    parts = urlsplit(url.strip())
    key = domain + (parts.path.rstrip("/") or "")
    return key + ("?" + parts.query if parts.query else "")


def load_cited(path: str, match: str) -> set[str]:
    """The keys (`match` = "url" or "domain") of a URL list written by `corpusmill wiki-refs`."""
    key = {"url": url_key, "domain": domain_key}[match]
    out = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            k = key(line.strip()) if line.strip() else None
            if k:
                out.add(k)
    return out
