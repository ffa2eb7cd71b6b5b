import gzip
import json

import pytest

from pipeline.sources import c4
from tests.sources.conftest import SAMPLE, read_all


def _records(n):
    with gzip.open(SAMPLE / "c4" / "c4-00000.json.gz", "rt", encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


def test_read_real_c4_lines_and_metadata():
    batches, stats, dead = read_all(c4, SAMPLE / "c4" / "c4-00000.json.gz", c4.C4Config())
    assert stats.docs_in == stats.docs_out == 186 and not dead
    first = batches[0].to_pylist()[0]
    assert first["source"] == "c4" and first["url"].startswith("http")
    assert json.loads(first["metadata"])["timestamp"]


def test_malformed_line_is_a_dead_letter_naming_file_and_line(tmp_path):
    good = json.dumps(_records(1)[0])
    path = tmp_path / "bad.json"
    path.write_text(good + "\n{not json\n" + json.dumps({"url": "x"}) + "\n")
    batches, stats, dead = read_all(c4, path, c4.C4Config())
    assert stats.docs_in == 3 and stats.docs_out == 1 and stats.dropped["malformed_record"] == 2
    assert [d["record"] for d in dead] == [1, 2] and all(d["file"] == str(path) for d in dead)


def test_quality_keeps_a_real_c4_page():
    rule = c4.C4Quality()
    from collections import Counter

    text = _records(1)[0]["text"]
    page, reason = rule.clean_page(text, Counter())
    assert reason is None and page.split("\n")[0] == text.split("\n")[0]


def test_quality_line_rules_on_real_lines():
    from collections import Counter

    rule, notes = c4.C4Quality(), Counter()
    real = _records(3)[1]["text"].split("\n")
    lines = real + ["Home", "Please enable JavaScript to view this page.", "Read our privacy policy before you sign up.", "Click here for more [1]."]
    page, reason = rule.clean_page("\n".join(lines), notes)
    assert "Home" not in page.split("\n") and "JavaScript" not in page and "privacy policy" not in page
    assert "Click here for more." in page.split("\n")  # citation marker removed, line kept
    assert notes["lines_without_terminal_punctuation"] >= 1 and notes["lines_with_javascript"] == 1 and notes["lines_with_policy_text"] == 1


@pytest.mark.parametrize(
    "text,reason",
    [
        ("Lorem ipsum dolor sit amet. " * 10, "c4_lorem_ipsum"),
        ("function f() { return 1; } is code. " * 10, "c4_curly_bracket"),
        ("This is one sentence only.\nAnd here a second one.", "c4_too_few_sentences"),
        ("no punctuation here\nnor here", "c4_no_lines_left"),
    ],
)
def test_quality_page_rules(text, reason):
    from collections import Counter

    assert c4.C4Quality().clean_page(text, Counter()) == (None, reason)


def test_count_sentences():
    assert c4.count_sentences('He said "stop." Then he left! Why? 3.5 is a number.') == 4
