import json
import shutil

import pytest

from pipeline.runs import InputError
from pipeline.sources import stackexchange as se
from tests.sources.conftest import DATA, SAMPLE, apply, read_all

POSTS = SAMPLE / "stackexchange" / "coffee.stackexchange.com" / "Posts.xml"


def _rows(path, config=None):
    config = config or se.StackExchangeConfig()
    batches, stats, dead = read_all(se, path, config)
    rows = []
    for b in batches:
        out, _ = apply(config.before(), b)
        rows += out.to_pylist()
    return rows, stats


def test_question_with_answers_sorted_by_score_html_removed():
    import html
    import re

    rows, stats = _rows(POSTS)
    raw = POSTS.read_text(encoding="utf-8-sig")
    assert stats.docs_in == len(rows) == raw.count('PostTypeId="1"')
    first = rows[0]
    meta = json.loads(first["metadata"])
    assert meta["site"] == "coffee.stackexchange.com" and meta["question_id"] == "1"
    # RedPajama's layout: "Q: <title> <question>" then "\nA: <answer>" per answer
    assert first["text"].startswith("Q: How should I store whole bean coffee? I just got a pound of microroasted")
    assert "<p>" not in first["text"] and "&lt;" not in first["text"]
    # the answers of question 1 as the dump has them (Id, Score, Body), in the order the scores give
    answers = re.findall(r'<row Id="(\d+)" PostTypeId="2" ParentId="1" [^>]*Score="(-?\d+)" Body="([^"]*)"', raw)
    assert meta["answers"] == len(answers) >= 2 and len({s for _, s, _ in answers}) > 1
    expected = sorted(answers, key=lambda a: (-int(a[1]), int(a[0])))
    parts = first["text"].split("\nA: ")
    assert len(parts) == len(answers) + 1
    for part, (_, _, body) in zip(parts[1:], expected):
        opening = re.sub(r"<[^>]+>", "", html.unescape(body)).split()[:4]  # the answer's first words
        assert part.split()[:4] == opening


def test_sites_flag_and_site_from_folder(tmp_path):
    rows, stats = _rows(POSTS, se.StackExchangeConfig(sites=("history.stackexchange.com",)))
    assert rows == [] and stats.notes["files_of_unselected_sites"] == 1 and stats.docs_in == 0
    copy = tmp_path / "Posts.xml"
    shutil.copy(POSTS, copy)
    rows, _ = _rows(copy, se.StackExchangeConfig(site="coffee.stackexchange.com"))
    assert json.loads(rows[0]["metadata"])["site"] == "coffee.stackexchange.com"


def test_top_sites_keeps_the_sites_with_most_posts(tmp_path):
    import argparse

    lines = POSTS.read_text(encoding="utf-8-sig").split("\n")
    rows = [i for i, line in enumerate(lines) if line.lstrip().startswith("<row")]
    # three sites cut from the real dump: all its rows, its first 40, its first 10
    for name, n in (("big.stackexchange.com", len(rows)), ("mid.stackexchange.com", 40), ("small.stackexchange.com", 10)):
        (tmp_path / name).mkdir()
        kept = lines[: rows[0]] + lines[rows[0] : rows[0] + n] + [lines[-2] if not lines[-1].strip() else lines[-1]]
        (tmp_path / name / "Posts.xml").write_text("\n".join(kept) + "\n", encoding="utf-8")
        assert se.count_posts(str(tmp_path / name / "Posts.xml")) == n
    args = argparse.Namespace(input=[str(tmp_path / "*" / "Posts.xml")], sites=None, site=None, top_sites=2, batch_records=None)
    assert se.config_from_args(args).sites == ("big.stackexchange.com", "mid.stackexchange.com")
    args.top_sites = 3  # no more sites than kept: every site, without counting
    assert se.config_from_args(args).sites is None
    args.top_sites, args.sites = 2, "small.stackexchange.com"
    assert se.config_from_args(args).sites == ("small.stackexchange.com",)
    # without the flag (before the CLI has it) the default is RedPajama's 28
    assert se.config_from_args(argparse.Namespace(input=args.input, sites=None, site=None, batch_records=None)).sites is None


def test_xml_bomb_refused(tmp_path):
    site = tmp_path / "bomb.stackexchange.com"
    site.mkdir()
    shutil.copy(DATA / "xml_bomb.xml", site / "Posts.xml")
    with pytest.raises(InputError, match=r"bomb.stackexchange.com/Posts.xml.*refused unsafe XML"):
        _rows(site / "Posts.xml")


def test_malformed_question_row_is_dead_letter(tmp_path):
    site = tmp_path / "x.stackexchange.com"
    site.mkdir()
    lines = POSTS.read_text(encoding="utf-8-sig").split("\n")
    lines.insert(2, '  <row PostTypeId="1" Title="no id or body" />')
    (site / "Posts.xml").write_text("\n".join(lines), encoding="utf-8")
    batches, stats, dead = read_all(se, site / "Posts.xml", se.StackExchangeConfig())
    assert stats.dropped["malformed_record"] == 1 and dead[0]["record"] == 0 and "Posts.xml" in dead[0]["file"]
