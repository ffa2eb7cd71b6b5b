"""Rebuild the bundled test documents of tests/data/tokenizer/ from the shared miniature corpus.

Run once by hand (tests never read the shared corpus):

    python bench/make_tokenizer_test_data.py ../shared/corpus [CCNET_RUN]

Every text is copied byte-for-byte from its origin (see README.md); only selections and cuts (book
excerpts at a paragraph boundary) are made here, with fixed choices, so a rebuild gives the same files.
"""
from __future__ import annotations

import glob
import gzip
import json
import os
import sys
import xml.etree.ElementTree as ET

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "tokenizer")  # where it writes


def write(source: str, docs: list[dict]) -> None:
    path = os.path.join(HERE, f"{source}.jsonl.gz")
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        for d in docs:
            f.write((json.dumps({"source": source, **d}, ensure_ascii=False) + "\n").encode())
    print(source, len(docs), "documents", sum(len(d["text"]) for d in docs), "chars")


def main(corpus: str, ccnet_run: str | None) -> None:
    with gzip.open(os.path.join(corpus, "c4/c4-00000.json.gz"), "rt", encoding="utf-8") as f:
        c4 = [json.loads(line) for line in f]
    write("c4", [{"native_id": r["url"], "url": r["url"], "text": r["text"]} for r in c4[:30]])

    github = []
    with gzip.open(os.path.join(corpus, "github/github-00000.jsonl.gz"), "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            if i % 25 == 0 and len(r["content"]) < 6000:
                github.append({"native_id": f"{r['repo_name']}/{r['path']}", "url": None, "text": r["content"],
                               "metadata": {"repo_name": r["repo_name"], "path": r["path"], "license": r["license"]}})
    write("github", github)

    with gzip.open(os.path.join(corpus, "wikipedia/summaries-en.jsonl.gz"), "rt", encoding="utf-8") as f:
        wiki = [json.loads(line) for line in f]
    write("wikipedia", [{"native_id": r["title"], "url": None, "text": r["text"], "metadata": {"title": r["title"]}} for r in wiki[:150]])

    books = []
    for path in sorted(glob.glob(os.path.join(corpus, "books/gutenberg/*.txt"))):
        raw = open(path, "rb").read()
        text = raw.decode("utf-8-sig") if path.endswith("-0.txt") else raw.decode("latin-1")
        # An excerpt: about 8,000 characters from the middle of the book, cut at paragraph boundaries.
        middle = len(text) // 2
        start = text.find("\r\n\r\n", middle) + 4
        end = text.find("\r\n\r\n", start + 8000)
        books.append({"native_id": os.path.basename(path), "url": None, "text": text[start:end],
                      "metadata": {"file": os.path.basename(path), "excerpt_chars": [start, end]}})
    write("books", books)

    arxiv = []
    for name in ("basic_usage.tex", "calculus.tex", "conclusion_and_future_work.tex", "introduction.tex", "logic.tex",
                 "matrices.tex", "numerics.tex", "printers.tex", "sets.tex", "simplification.tex", "solvers.tex", "stats.tex"):
        text = open(os.path.join(corpus, "arxiv/sympy-paper", name), encoding="utf-8").read()
        arxiv.append({"native_id": f"sympy-paper/{name}", "url": None, "text": text, "metadata": {"path": f"sympy-paper/{name}"}})
    write("arxiv", arxiv)

    stack = []
    root = ET.parse(os.path.join(corpus, "stackexchange/coffee.stackexchange.com/Posts.xml")).getroot()
    for row in root.iter("row"):
        if len(stack) >= 120:
            break
        body = row.get("Body") or ""
        text = (row.get("Title") + "\n" + body) if row.get("Title") else body
        stack.append({"native_id": f"coffee.stackexchange.com/{row.get('Id')}", "url": None, "text": text,
                      "metadata": {"site": "coffee.stackexchange.com", "post_id": row.get("Id"), "post_type": row.get("PostTypeId")}})
    write("stackexchange", stack)

    if ccnet_run:
        import pyarrow.parquet as pq
        rows = []
        for path in sorted(glob.glob(os.path.join(ccnet_run, "part-*.parquet"))):
            rows += pq.read_table(path, columns=["id", "url", "text", "metadata"]).to_pylist()
        rows = rows[:150]
        write("commoncrawl", [{"native_id": r["id"], "url": r["url"], "text": r["text"], "metadata": json.loads(r["metadata"] or "{}")} for r in rows])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
