"""Wikipedia (LLaMA §2.1: "Wikipedia dumps from the June-August 2022 period, covering 20 languages,
which use either the Latin or Cyrillic scripts ... we process the data to remove hyperlinks,
comments and other formatting boilerplate.")

    read (MediaWiki XML dump, .xml / .xml.bz2 / .xml.gz, streamed) -> article_filter
        -> wikitext_to_text -> drop_empty

Reading streams the dump with a defusedxml-guarded iterparse (an entity declaration or external
reference, e.g. an XML bomb, is refused with an error naming the file) and frees each <page> once
read, so memory stays flat on a multi-GB dump.

Rules (docs/sources.md):
- article_filter: a page with a <redirect> element or whose text starts with #REDIRECT is a
  `redirect`; a page outside namespace 0 (Talk, User, Template, Category...) is
  `non_article_namespace`; a dump whose language (the root's xml:lang, else the dbname `xxwiki`,
  else --dump-language) is not in `languages` (default: the paper's 20) has its pages dropped as
  `language`;
- wikitext_to_text, with mwparserfromhell: internal links -> their label (or target), external links
  -> their label (a bare URL goes), templates, comments, <ref>s, tables, galleries, math, File:/
  Image:/Category: links and interlanguage links removed; headings kept as their own line; HTML
  formatting tags reduced to their content, entities decoded; behaviour switches (__TOC__) removed;
  runs of blank lines collapsed. The title is the first line of the text.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipeline.accounting import StageStats
from pipeline.runs import InputError
from pipeline.sources.common import BatchBuilder, DropEmpty, TextStep, local_name, open_maybe_compressed, text_totals, xml_records

SOURCE = "wikipedia"
STAGES = ["read", "article_filter", "wikitext_to_text", "drop_empty"]
GLOBAL = None
# The 20 languages of the LLaMA paper.
LLAMA_LANGUAGES = ("bg", "ca", "cs", "da", "de", "en", "es", "fr", "hr", "hu", "it", "nl", "pl", "pt", "ro", "ru", "sl", "sr", "sv", "uk")
EXTRA_FIELDS = [pa.field("_ns", pa.int32()), pa.field("_redirect", pa.bool_()), pa.field("_language", pa.string())]
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


@dataclasses.dataclass
class WikipediaConfig:
    languages: tuple[str, ...] | None = LLAMA_LANGUAGES
    dump_language: str | None = None  # when the dump names no language
    min_chars: int = 1
    batch_records: int = 64

    def check_models(self) -> None:
        pass

    def before(self) -> list:
        return [ArticleFilter(self.languages), WikitextToText(), DropEmpty(self.min_chars)]

    def after(self) -> list:
        return []


def _dump_language(root_attrib: dict, dbname: str | None, fallback: str | None) -> str | None:
    lang = root_attrib.get(XML_LANG)
    if lang:
        return lang.lower()
    if dbname and dbname.endswith("wiki"):
        return dbname[: -len("wiki")].replace("_", "-")
    return fallback


def read(path: str, file_index: int, stats: StageStats, dead: list[dict], config: WikipediaConfig) -> Iterator:
    """One document per <page>; damage costs only the pages it touches (`xml_records`)."""
    builder = BatchBuilder(SOURCE, file_index, config.batch_records, EXTRA_FIELDS)
    site = {"dbname": None, "base": None}
    language = None
    with open_maybe_compressed(path) as stream:
        for kind, *item in xml_records(stream, path, "mediawiki", "page", stats, dead):
            if kind == "header":
                head = item[0]
                for child in next((c for c in head if local_name(c.tag) == "siteinfo"), []):
                    if local_name(child.tag) in site:
                        site[local_name(child.tag)] = (child.text or "").strip()
                language = _dump_language(dict(head.attrib), site["dbname"], config.dump_language) or "unknown"
                continue
            record, elem = item
            page = {local_name(c.tag): c for c in elem}
            stats.docs_in += 1
            title = (page["title"].text or "") if "title" in page else None
            revision = page.get("revision")
            text_el = None
            if revision is not None:
                text_el = next((c for c in revision if local_name(c.tag) == "text"), None)
            ns_text = (page["ns"].text or "0").strip() if "ns" in page else "0"
            if title is None or text_el is None or not ns_text.lstrip("-").isdigit():
                stats.drop("malformed_record")
                dead.append({"file": path, "record": record, "reason": "malformed_record",
                             "error": "page without <title> or <revision><text>, or with a non-numeric <ns>"})
                continue
            ns = int(ns_text)
            page_id = (page["id"].text or "").strip() if "id" in page else str(record)
            wikitext = text_el.text or ""
            redirect = "redirect" in page or wikitext.lstrip()[:9].upper() == "#REDIRECT"
            stats.docs_out += 1
            url = _page_url(site["base"], title)
            meta = {"title": title, "page_id": page_id, "ns": ns, "dbname": site["dbname"], "language": language}
            full = builder.add(
                record, f"{site['dbname'] or path}:{page_id}", wikitext, url=url, metadata=meta,
                _ns=ns, _redirect=redirect, _language=language,
            )
            if full:
                yield full
    last = builder.flush()
    if last:
        yield last


def _page_url(base: str | None, title: str) -> str | None:
    if not base or "/wiki/" not in base:
        return None
    return base.split("/wiki/", 1)[0] + "/wiki/" + title.replace(" ", "_")


@dataclasses.dataclass
class ArticleFilter:
    languages: tuple[str, ...] | None = LLAMA_LANGUAGES
    name: str = "article_filter"

    def __call__(self, batch):
        stats = StageStats(self.name, docs_in=batch.num_rows)
        stats.chars_in, stats.lines_in = text_totals(batch.column("text"))
        redirect = batch.column("_redirect").to_numpy(zero_copy_only=False).astype(bool)
        ns = batch.column("_ns").to_numpy(zero_copy_only=False)
        lang = np.array(batch.column("_language").to_pylist(), dtype=object)
        wrong_lang = np.zeros(batch.num_rows, bool) if self.languages is None else ~np.isin(lang, list(self.languages))
        is_redirect = ~wrong_lang & redirect
        other_ns = ~wrong_lang & ~redirect & (ns != 0)
        stats.drop("language", int(wrong_lang.sum()))
        stats.drop("redirect", int(is_redirect.sum()))
        stats.drop("non_article_namespace", int(other_ns.sum()))
        keep = ~(wrong_lang | is_redirect | other_ns)
        out = batch.filter(pa.array(keep)).drop_columns(["_ns", "_redirect"])
        out = out.set_column(out.schema.get_field_index("_language"), "language", out.column("_language"))
        stats.docs_out = out.num_rows
        stats.chars_out, stats.lines_out = text_totals(out.column("text"))
        return out, stats


# Tags whose content is not prose: removed with their content.
DROP_TAGS = {
    "ref", "references", "table", "gallery", "math", "chem", "ce", "timeline", "score", "graph", "imagemap",
    "syntaxhighlight", "source", "pre", "code", "templatedata", "noinclude", "includeonly", "mapframe",
    "maplink", "hiero", "inputbox", "categorytree", "sup", "sub",
}
# Wiki-markup tags whose marker carries no text (list bullets, definition markers, rules).
MARKER_TAGS = {"li", "dt", "dd", "hr"}
DROP_LINK_PREFIXES = {"file", "image", "category", "media", "wikipedia", "wp", "help", "template", "portal", "special", "user", "talk", "wikt", "wiktionary", "s", "commons", "meta", "mw", "d", "q", "n", "b", "v", "voy"}
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z]+)?$")
_SWITCH = re.compile(r"__[A-Z]+__")
_LEFTOVER_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref\s*>", re.S | re.I)
_LEFTOVER_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_BLANKS = re.compile(r"\n[ \t]*(\n[ \t]*)+")
_SPACES = re.compile(r"[ \t]+")


def wikitext_to_text(wikitext: str) -> str:
    import mwparserfromhell

    body = _render(mwparserfromhell.parse(wikitext, skip_style_tags=False))
    body = _SWITCH.sub("", body)
    # Markup the parser left as text (a <ref> inside an unbalanced construct): removed by pattern.
    body = _LEFTOVER_REF.sub("", body)
    body = _LEFTOVER_TAG.sub("", body)
    lines = [_SPACES.sub(" ", line).strip() for line in body.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _link_dropped(title: str) -> bool:
    title = title.strip()
    if title.startswith(":"):  # [[:Category:X]] is a visible link to the category page
        return False
    if ":" not in title:
        return False
    prefix = title.split(":", 1)[0].strip().lower()
    return prefix in DROP_LINK_PREFIXES or bool(_INTERLANGUAGE.match(prefix))


def _render(code) -> str:
    from mwparserfromhell import nodes

    out = []
    for node in code.nodes:
        if isinstance(node, nodes.Text):
            out.append(str(node))
        elif isinstance(node, nodes.Wikilink):
            title = str(node.title)
            if _link_dropped(title):
                continue
            out.append(_render(node.text) if node.text is not None else _render(node.title).lstrip(":").split("#", 1)[0])
        elif isinstance(node, nodes.ExternalLink):
            if node.title is not None:
                out.append(_render(node.title))
        elif isinstance(node, nodes.Heading):
            out.append("\n" + _render(node.title).strip() + "\n")
        elif isinstance(node, nodes.Tag):
            tag = str(node.tag).strip().lower()
            if tag in DROP_TAGS:
                continue
            if tag == "br":
                out.append("\n")
            elif tag in MARKER_TAGS:
                continue
            elif node.contents is not None:
                out.append(_render(node.contents))
        elif isinstance(node, nodes.HTMLEntity):
            out.append(node.normalize())
        # Template, Comment, Argument (template parameters): removed.
    return "".join(out)


@dataclasses.dataclass
class WikitextToText(TextStep):
    name: str = "wikitext_to_text"

    def transform(self, text, row, batch, notes):
        title = batch.column("metadata")[row].as_py()
        import json

        body = wikitext_to_text(text)
        return (json.loads(title)["title"] + "\n\n" + body) if body else "", None


def config_from_args(args) -> WikipediaConfig:
    d = WikipediaConfig()
    langs = args.languages or ",".join(d.languages)
    return WikipediaConfig(
        languages=None if langs == "all" else tuple(x for x in langs.split(",") if x),
        dump_language=args.dump_language,
        batch_records=args.batch_records or d.batch_records,
    )
