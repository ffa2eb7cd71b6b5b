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
    import re

    rows, stats = _rows(POSTS)
    raw = POSTS.read_text(encoding="utf-8-sig")
    assert stats.docs_in == len(rows) == raw.count('PostTypeId="1"')
    first = rows[0]
    meta = json.loads(first["metadata"])
    assert meta["site"] == "coffee.stackexchange.com" and meta["question_id"] == "1"
    assert first["text"].startswith("Q: How should I store whole bean coffee?\n\nI just got a pound of microroasted")
    assert "<p>" not in first["text"] and "&lt;" not in first["text"]
    # the answers of question 1 in the dump, by score: the text lists them in that order
    answers = re.findall(r'<row Id="(\d+)" PostTypeId="2" ParentId="1" [^>]*Score="(-?\d+)"', raw)
    assert meta["answers"] == len(answers) >= 2
    parts = first["text"].split("\n\nA: ")
    assert len(parts) == len(answers) + 1
    by_score = [int(s) for _, s in sorted(answers, key=lambda a: (-int(a[1]), int(a[0])))]
    assert by_score == sorted(by_score, reverse=True)


def test_sites_flag_and_site_from_folder(tmp_path):
    rows, stats = _rows(POSTS, se.StackExchangeConfig(sites=("history.stackexchange.com",)))
    assert rows == [] and stats.notes["files_of_unselected_sites"] == 1 and stats.docs_in == 0
    copy = tmp_path / "Posts.xml"
    shutil.copy(POSTS, copy)
    rows, _ = _rows(copy, se.StackExchangeConfig(site="coffee.stackexchange.com"))
    assert json.loads(rows[0]["metadata"])["site"] == "coffee.stackexchange.com"


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
