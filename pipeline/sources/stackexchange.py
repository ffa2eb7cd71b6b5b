"""StackExchange (LLaMA §2.1: "We kept the data from the 28 largest websites, removed the HTML tags
from text and sorted the answers by score (from highest to lowest).")

    read (a site's Posts.xml from the data dump, .xml / .xml.gz / .xml.bz2) -> html_to_text -> drop_empty

- read: the site is the name of the folder holding Posts.xml (`coffee.stackexchange.com/Posts.xml`,
  as the dump's archives unpack) or `--site` when given one file; `--sites` selects sites (a file
  of another site is skipped whole, counted under notes). The XML is parsed with a defusedxml
  guard (an entity declaration - an XML bomb - is refused with an error naming the file).
  A question (PostTypeId 1) is a document; its answers (PostTypeId 2, by ParentId) are attached,
  sorted by Score, highest first (ties: lower Id first). Other post types (tag wikis, moderator
  nominations...) are not documents: counted under notes; so are answers whose question is not in
  the file. A row without Id or Body is `malformed_record` (dead letter with the row's number).
- html_to_text: the question's title, body and each answer's body are converted from HTML to plain
  text (Resiliparse `extract_plain_text`, all content, formatting kept: paragraphs, lists, code)
  and laid out as  'Q: <title>\\n\\n<body>\\n\\nA: <answer 1>\\n\\nA: <answer 2>...'.
The whole file's posts are grouped in memory (a site's questions and answers are interleaved by
date in the dump); the largest site dumps need that much memory once per file.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import pyarrow as pa

from pipeline.accounting import StageStats
from pipeline.runs import InputError, expand_inputs
from pipeline.sources.common import BatchBuilder, DropEmpty, count_lines, open_maybe_compressed, replace_columns, text_totals, xml_records

SOURCE = "stackexchange"
STAGES = ["read", "html_to_text", "drop_empty"]
GLOBAL = None
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


@dataclasses.dataclass
class HtmlToText:
    name: str = "html_to_text"

    def __call__(self, batch):
        stats = StageStats(self.name, docs_in=batch.num_rows, docs_out=batch.num_rows)
        body = batch.column("text")
        answers = batch.column("_answers").to_pylist()
        titles = batch.column("_title").to_pylist()
        stats.chars_in = sum(len(b) for b in body.to_pylist()) + sum(len(a) for ans in answers for a in ans) + sum(len(t) for t in titles)
        stats.lines_in = text_totals(body)[1]
        texts = []
        for title, q, ans in zip(titles, body.to_pylist(), answers):
            parts = [f"Q: {title.strip()}\n\n{html_to_text(q)}".strip()]
            parts += [f"A: {html_to_text(a)}" for a in ans]
            texts.append("\n\n".join(parts))
        new = pa.array(texts, pa.string())
        out = replace_columns(batch.drop_columns(["_title", "_answers"]), text=new,
                              nlines=pa.array([count_lines(t) for t in texts], pa.int32()))
        stats.chars_out, stats.lines_out = text_totals(new)
        return out, stats


def config_from_args(args) -> StackExchangeConfig:
    d = StackExchangeConfig()
    sites = None if not args.sites or args.sites == "all" else tuple(x for x in args.sites.split(",") if x)
    return StackExchangeConfig(sites=sites, site=args.site, batch_records=args.batch_records or d.batch_records)
