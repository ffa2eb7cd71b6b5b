"""StackExchange (LLaMA §2.1: "We kept the data from the 28 largest websites, removed the HTML tags
from text and sorted the answers by score (from highest to lowest).")

    read (a site's Posts.xml from the data dump, .xml / .xml.gz / .xml.bz2) -> html_to_text -> drop_empty

- sites: RedPajama's rule (count.py, filter.py:21-22): the 28 sites with most posts (questions +
  answers) among the inputs; `corpusmill source stackexchange` chooses them from its inputs
  (`--top-sites N`, `--sites a,b` names them, `--sites all` keeps every one). A file of a site not
  chosen is skipped whole, counted under notes. The site is the name of the folder holding
  Posts.xml (`coffee.stackexchange.com/Posts.xml`, as the dump's archives unpack) or `--site`.
- read: the XML is parsed with a defusedxml guard (an entity declaration - an XML bomb - is refused
  with an error naming the file). A question (PostTypeId 1) is a document; its answers (PostTypeId
  2, by ParentId) are attached, sorted by Score as a number, highest first (ties: lower Id first).
  Other post types (tag wikis, moderator nominations...) are not documents: counted under notes; so
  are answers whose question is not in the file. A row without Id or Body is `malformed_record`
  (dead letter with the row's number).
- html_to_text: title, question and answers from HTML to plain text (Resiliparse
  `extract_plain_text`, formatting kept: paragraphs, lists, code), laid out as RedPajama's
  post_processing.py does: 'Q: <title> <question>\nA: <answer 1>\nA: <answer 2>...'.

The whole file's posts are grouped in memory (a site's questions and answers are interleaved by
date in the dump); the largest site dumps need that much memory once per file.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Iterator

import pyarrow as pa

from pipeline.accounting import StageStats
from pipeline.runs import expand_inputs
from pipeline.sources.common import BatchBuilder, DropEmpty, open_maybe_compressed, xml_records
from pipeline.step import Outcome, Step, text_totals

SOURCE = "stackexchange"
STAGES = ["read", "html_to_text", "drop_empty"]
GLOBAL = None
TOP_SITES = 28  # LLaMA §2.1 "the 28 largest websites"; RedPajama filter.py:21-22
EXTRA_FIELDS = [pa.field("_title", pa.string()), pa.field("_answers", pa.list_(pa.string()))]


@dataclasses.dataclass
class StackExchangeConfig:
    sites: tuple[str, ...] | None = None  # None: every site given
    site: str | None = None  # the site name when it cannot be read from the folder name
    batch_records: int = 128

    def check_models(self) -> None:
        pass

    def before(self) -> list:
        return [HtmlToText(), DropEmpty()]

    def after(self) -> list:
        return []


def expand(patterns: list[str]) -> list[str]:
    return expand_inputs(patterns)


def site_of(path: str, config: StackExchangeConfig) -> str:
    if config.site:
        return config.site
    return os.path.basename(os.path.dirname(os.path.abspath(path))) or "unknown"


def read(path: str, file_index: int, stats: StageStats, dead: list[dict], config: StackExchangeConfig) -> Iterator:
    site = site_of(path, config)
    if config.sites is not None and site not in config.sites:
        stats.notes["files_of_unselected_sites"] += 1
        return
    questions: dict[str, dict] = {}
    order: list[str] = []
    answers: dict[str, list[tuple[int, int, str]]] = {}
    with open_maybe_compressed(path) as stream:
        for what, *item in xml_records(stream, path, "posts", "row", stats, dead):
            if what == "header":
                continue
            row_no, elem = item
            a = elem.attrib
            kind = a.get("PostTypeId")
            if kind == "1":
                stats.docs_in += 1
                if not a.get("Id") or a.get("Body") is None or a["Id"] in questions:
                    stats.drop("malformed_record")
                    problem = "question row without Id or Body" if a.get("Id") not in questions else f"a second question with Id {a['Id']}"
                    dead.append({"file": path, "record": row_no, "reason": "malformed_record", "error": problem})
                else:
                    questions[a["Id"]] = {
                        "row": row_no, "title": a.get("Title", ""), "body": a["Body"], "score": _int(a.get("Score")),
                        "tags": a.get("Tags", ""), "date": a.get("CreationDate"), "accepted": a.get("AcceptedAnswerId"),
                    }
                    order.append(a["Id"])
            elif kind == "2":
                if a.get("ParentId") and a.get("Body") is not None:
                    answers.setdefault(a["ParentId"], []).append((-_int(a.get("Score")), _int(a.get("Id")), a["Body"]))
                else:
                    stats.notes["answers_without_parent_or_body"] += 1
            else:
                stats.notes[f"skipped_post_type_{kind}"] += 1
    stats.notes["answers_without_question"] += sum(len(v) for k, v in answers.items() if k not in questions)
    builder = BatchBuilder(SOURCE, file_index, config.batch_records, EXTRA_FIELDS)
    for qid in order:
        q = questions[qid]
        ranked = sorted(answers.get(qid, []))
        stats.docs_out += 1
        meta = {"site": site, "question_id": qid, "score": q["score"], "tags": _tags(q["tags"]), "answers": len(ranked), "date": q["date"]}
        full = builder.add(
            q["row"], f"{site}/{qid}", q["body"], url=f"https://{site}/questions/{qid}", metadata=meta,
            _title=q["title"], _answers=[body for _, _, body in ranked],
        )
        if full:
            yield full
    last = builder.flush()
    if last:
        yield last


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _tags(tags: str) -> list[str]:
    return [t for t in tags.replace(">", "").split("<") if t] if "<" in tags else [t for t in tags.split("|") if t]


def html_to_text(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, main_content=False, preserve_formatting=True, list_bullets=True, alt_texts=False, links=False).strip()


def qa_text(title: str, question_html: str, answers_html: list[str]) -> str:
    """RedPajama's layout (post_processing.py:43-46): 'Q: <title> <question>' then one '\nA: <answer>'
    per answer, answers already in score order."""
    question = f"{title.strip()} {html_to_text(question_html)}".strip()
    return "".join([f"Q: {question}"] + [f"\nA: {html_to_text(a)}" for a in answers_html])


@dataclasses.dataclass
class HtmlToText(Step):
    """Question title, body and the ranked answers -> the Q:/A: text (`qa_text`)."""

    name: str = "html_to_text"

    def measure(self, batch):
        chars, lines = text_totals(batch.column("text"))
        if "_answers" in batch.schema.names:  # before: the question, its title and its answers are the input
            chars += sum(len(t) for t in batch.column("_title").to_pylist())
            chars += sum(len(a) for ans in batch.column("_answers").to_pylist() for a in ans)
        return chars, lines

    def process(self, batch, notes):
        titles, bodies, answers = (batch.column(c).to_pylist() for c in ("_title", "text", "_answers"))
        return Outcome(text=[qa_text(t, q, a) for t, q, a in zip(titles, bodies, answers)], remove=("_title", "_answers"))


def count_posts(path: str) -> int:
    """Questions + answers of one Posts.xml: its `<row` elements, as RedPajama's count.py:16-19 counts
    them (one row per line, header and footer lines not counted)."""
    n = 0
    with open_maybe_compressed(path) as f:
        for line in f:
            n += line.lstrip().startswith(b"<row")
    return n


def largest_sites(paths: list[str], n: int, config: "StackExchangeConfig") -> tuple[str, ...]:
    """The `n` sites with most posts among the inputs (RedPajama filter.py:21-22: the first 28 of the
    sites sorted by post count); ties broken by site name so the choice does not depend on order."""
    counts: dict[str, int] = {}
    for p in paths:
        site = site_of(p, config)
        counts[site] = counts.get(site, 0) + count_posts(p)
    ranked = sorted(counts, key=lambda s: (-counts[s], s))
    return tuple(sorted(ranked[:n]))


def config_from_args(args) -> StackExchangeConfig:
    """`--sites a,b` keeps those sites; otherwise `--top-sites N` (default 28, LLaMA's and RedPajama's
    number; 0 or `--sites all`: every site) keeps the N inputs' sites with most posts."""
    d = StackExchangeConfig()
    given = getattr(args, "sites", None)
    site = getattr(args, "site", None)
    top = getattr(args, "top_sites", None)
    top = TOP_SITES if top is None else top
    if given and given != "all":
        sites = tuple(x for x in given.split(",") if x)
    elif given == "all" or not top:
        sites = None
    else:
        from pipeline.sources import expand

        paths = expand(sys.modules[__name__], args.input)
        by_site = {site_of(p, StackExchangeConfig(site=site)) for p in paths}
        # counting posts is a pass over every dump: only needed when there are more sites than kept
        sites = None if len(by_site) <= top else largest_sites(paths, top, StackExchangeConfig(site=site))
    return StackExchangeConfig(sites=sites, site=site, batch_records=getattr(args, "batch_records", None) or d.batch_records)
