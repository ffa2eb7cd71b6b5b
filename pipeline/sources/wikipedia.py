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
- wikitext_to_text, with mwparserfromhell, as RedPajama's Wikipedia (the HF `wikipedia` builder's
  `_parse_and_clean_wikicode`) does and more strictly, so that no markup is left: wiki tables are
  removed by their lines first (also indented or malformed ones the parser would leave as text);
  bold/italic quotes are parsed as text and removed (an unbalanced one otherwise makes the parser
  give up on the table or link around it); internal links -> their label (or target), external links
  -> their label (a bare URL goes); templates, comments, <ref>s, galleries, math removed; File: and
  Image: links (and their names in the 20 languages, or any namespaced link with an image option
  such as `thumb`) removed with their caption; Category: links kept as the category's name, as the
  reference does; interlanguage and other-namespace links removed; headings kept as their own line;
  other HTML tags, <sub>/<sup> included, reduced to their content; entities decoded; behaviour
  switches (__TOC__) removed; a line still holding table or template syntax removed (counted in
  notes as `markup_lines_removed`); runs of blank lines collapsed. The title is the first line.
"""
from __future__ import annotations

import dataclasses
import html
import re
from typing import Iterator

import pyarrow as pa

from pipeline.accounting import StageStats
from pipeline.sources.common import BatchBuilder, DropEmpty, local_name, open_maybe_compressed, xml_records
from pipeline.step import Outcome, Step, TextStep

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
class ArticleFilter(Step):
    languages: tuple[str, ...] | None = LLAMA_LANGUAGES
    name: str = "article_filter"

    def process(self, batch, notes):
        redirect = batch.column("_redirect").to_pylist()
        ns = batch.column("_ns").to_pylist()
        lang = batch.column("_language").to_pylist()
        reasons = [
            "language" if self.languages is not None and l not in self.languages
            else "redirect" if r else "non_article_namespace" if n != 0 else None
            for l, r, n in zip(lang, redirect, ns)
        ]
        return Outcome(drop=reasons, columns={"language": batch.column("_language")}, remove=("_ns", "_redirect", "_language"))


# Tags whose content is not prose: removed with their content (the reference removes <ref> and tables).
DROP_TAGS = {
    "ref", "references", "table", "gallery", "math", "chem", "ce", "timeline", "score", "graph", "imagemap",
    "syntaxhighlight", "source", "pre", "code", "templatedata", "noinclude", "includeonly", "mapframe",
    "maplink", "hiero", "inputbox", "categorytree",
}
# Wiki-markup tags whose marker carries no text (list bullets, definition markers, rules).
MARKER_TAGS = {"li", "dt", "dd", "hr"}
# File/Media namespaces (the reference's File|Image|Media plus their names in the 20 languages): the
# link goes with its caption.
MEDIA_PREFIXES = {
    "file", "image", "media", "datei", "bild", "fichier", "archivo", "imagen", "immagine", "bestand", "afbeelding",
    "plik", "grafika", "ficheiro", "imagem", "arquivo", "fișier", "imagine", "файл", "изображение", "зображення",
    "soubor", "obrázek", "fil", "billede", "fitxer", "imatge", "datoteka", "slika", "fájl", "kép", "фајл", "слика",
}
# Category namespaces: the reference keeps a category link as its name, without the prefix.
CATEGORY_PREFIXES = {
    "category", "kategorie", "catégorie", "categoría", "categoria", "categorie", "kategoria", "категория",
    "kategori", "kategorija", "kategória", "категорија", "категорія", "kategória",
}
# Other namespaces and sister projects: the link goes.
DROP_LINK_PREFIXES = {"wikipedia", "wp", "help", "template", "portal", "special", "user", "talk", "wikt", "wiktionary",
                      "s", "commons", "meta", "mw", "d", "q", "n", "b", "v", "voy"} | MEDIA_PREFIXES
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z]+)?$")
# Image options: a namespaced link with one of them is a file link in any language ([[Lêer:x.jpg|thumb|..]]).
_IMAGE_OPTION = re.compile(r"^\s*(?:thumb|thumbnail|frame|framed|frameless|border|upright(?:=[\d.]+)?|left|right|center|centre|"
                           r"none|mini|miniatur|vignette|miniatura|links|rechts|hochkant(?:=[\d.]+)?|\d*x?\d+px)\s*$", re.I)
_SWITCH = re.compile(r"__[A-Z]+__")
_LEFTOVER_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref\s*>", re.S | re.I)
_LEFTOVER_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_BLANKS = re.compile(r"\n[ \t]*(\n[ \t]*)+")
# What the parser leaves of a malformed construct inside a line: a table written on one line, the
# parameters of a template whose opening braces are missing (" |url=... |title=...}}"), an entity
# that was escaped twice in the dump (&amp;nbsp;).
_INLINE_TABLE = re.compile(r"\{\|.*?\|\}")
_TEMPLATE_TAIL = re.compile(r"(?:\s*\|[^|{}\n]*)*\s*\|[^|{}\n=]*=[^|{}\n]*(?:\s*\|[^|{}\n]*)*\}\}")
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);")
_SPACES = re.compile(r"[ \t]+")
# Bold and italic quotes: 2 italic, 3 bold, 5 both, 4 an apostrophe then bold. They are parsed as text
# (skip_style_tags): an unbalanced one would otherwise make the parser give up on the table or link
# around it and leave that markup as text.
_STYLE = re.compile(r"'{2,}")
_TABLE_OPEN = re.compile(r"^[:*#;\s]*\{\|")
_TABLE_CLOSE = re.compile(r"^\s*\|\}")
# Lines the parser can leave when a construct around them is malformed: table rows and cells
# ("|-", "| x", "! h"), an open or close of a table, template or link.
_MARKUP_LINE = re.compile(r"^\s*(?:\{\||\|\}|\||!.*(?:\||!!)|\{\{|\}\}|\[\[[^\]]*$|[^\[]*\]\]\s*$)")


def _unstyle(m: re.Match) -> str:
    n = len(m.group(0))
    return "'" if n == 4 else "'" * max(0, n - 5)


def remove_tables(wikitext: str) -> str:
    """Drops every wiki table, nested ones included, by its lines: `{|` (also indented, ':{|') opens,
    `|}` closes. The parser recognises only tables that open at the start of a line and are well
    formed; the reference removes all it recognises."""
    out, depth = [], 0
    for line in wikitext.split("\n"):
        if _TABLE_OPEN.match(line):
            depth += 1
        elif depth and _TABLE_CLOSE.match(line):
            depth -= 1
        elif not depth:
            out.append(line)
    return "\n".join(out)


def wikitext_to_text(wikitext: str, notes=None) -> str:
    import mwparserfromhell

    body = _render(mwparserfromhell.parse(remove_tables(wikitext), skip_style_tags=True))
    body = _SWITCH.sub("", body)
    # Markup the parser left as text (a <ref> inside an unbalanced construct): removed by pattern.
    body = _LEFTOVER_REF.sub("", body)
    body = _LEFTOVER_TAG.sub("", body)
    body = _TEMPLATE_TAIL.sub("", _INLINE_TABLE.sub("", body))
    body = _ENTITY.sub(lambda m: html.unescape(m.group(0)), body)
    lines = []
    for line in body.split("\n"):
        line = _SPACES.sub(" ", line).strip()
        if _MARKUP_LINE.match(line):
            if notes is not None:
                notes["markup_lines_removed"] += 1
            continue
        lines.append(line)
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _namespace(title: str) -> str | None:
    title = title.strip()
    if title.startswith(":") or ":" not in title:  # [[:Category:X]] is a visible link to the category page
        return None
    return title.split(":", 1)[0].strip().lower()


def _render(code) -> str:
    from mwparserfromhell import nodes

    out = []
    for node in code.nodes:
        if isinstance(node, nodes.Text):
            out.append(_STYLE.sub(_unstyle, str(node)))
        elif isinstance(node, nodes.Wikilink):
            title = str(node.title)
            space = _namespace(title)
            if space in CATEGORY_PREFIXES:
                out.append(title.split(":", 1)[1].split("|", 1)[0].strip())
            elif space in DROP_LINK_PREFIXES or (space and _INTERLANGUAGE.match(space)):
                continue
            elif space and node.text is not None and any(_IMAGE_OPTION.match(p) for p in str(node.text).split("|")[:-1]):
                continue
            else:
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

        body = wikitext_to_text(text, notes)
        return (json.loads(title)["title"] + "\n\n" + body) if body else "", None


def config_from_args(args) -> WikipediaConfig:
    d = WikipediaConfig()
    langs = args.languages or ",".join(d.languages)
    return WikipediaConfig(
        languages=None if langs == "all" else tuple(x for x in langs.split(",") if x),
        dump_language=args.dump_language,
        batch_records=args.batch_records or d.batch_records,
    )
