import io
import tarfile

from pipeline.sources import arxiv
from tests.sources.conftest import SAMPLE, apply, read_all


def _paper(path, config=None):
    config = config or arxiv.ArxivConfig()
    batches, stats, dead = read_all(arxiv, path, config)
    out, step_stats = apply(config.before(), batches[0])
    return out.to_pylist(), batches[0].to_pylist()[0], step_stats


def test_real_paper_tar_gz_trimmed_and_macros_expanded():
    rows, raw, stats = _paper(SAMPLE / "arxiv" / "1707.08043.tar.gz")
    text = rows[0]["text"]
    assert "\\documentclass" in raw["text"] and "\\newcommand" in raw["text"]
    assert text.startswith("\\section*{Introduction}")
    assert "\\begin{thebibliography}" not in text and "\\bibitem" not in text and "\\newcommand" not in text
    assert rows[0]["url"] == "https://arxiv.org/abs/1707.08043"


def test_real_paper_argument_less_macros_expanded_as_redpajama():
    rows, raw, stats = _paper(SAMPLE / "arxiv" / "1708.00137")
    text = rows[0]["text"]
    # \newcommand{\id}{\mathds{1}} takes no argument: expanded; \ket[1] takes one: left as written
    assert "\\newcommand{\\id}{\\mathds{1}}" in raw["text"] and "\\id" in raw["text"].split("\\begin{document}")[1]
    assert "\\id " not in text and "\\id}" not in text and "\\mathds{1}" in text
    assert "\\ket{" in text


def test_real_paper_macros_with_arguments_expanded_as_an_option():
    rows, raw, stats = _paper(SAMPLE / "arxiv" / "1708.00137", arxiv.ArxivConfig(macros_with_arguments=True))
    text = rows[0]["text"]
    assert "\\ket{" in raw["text"] and "\\ket{" not in text and "\\left|" in text
    assert stats[1].notes["macro_uses_expanded"] > 0
    # commented-out definition of \proj is gone, the live one ([#1]) was applied
    assert "\\proj{" not in text


def test_cut_at_the_appendix_or_the_bibliography_whichever_first():
    body = (SAMPLE / "arxiv" / "1708.00137" / "main.tex").read_text(encoding="utf-8")
    first = body.index("\\section")
    second = body.index("\\section", first + 1)
    with_appendix = body[:second] + "\\appendix\n" + body[second:]
    trimmed = arxiv.trim_paper(with_appendix)
    assert trimmed == arxiv.trim_paper(body[:second] + "\\end{document}")  # nothing from \appendix on
    kept = arxiv.trim_paper(with_appendix, keep_appendix=True)  # the option: only the bibliography goes
    assert "\\appendix" in kept and len(kept) > len(trimmed)


def test_folder_paper_inlines_inputs_and_picks_main_file():
    rows, raw, stats = _paper(SAMPLE / "arxiv" / "scipy-articles")
    import json

    meta = json.loads(rows[0]["metadata"])
    assert meta["main"] == "scipy-1.0/paper.tex" and "scipy-1.0/core-dev.tex" in meta["inlined"]
    assert "\\input{core-dev}" not in raw["text"]


def test_comment_rules():
    src = "a % comment\n% whole line\nb \\% percent\nc \\\\% after linebreak\n\\begin{comment}\nhidden\n\\end{comment}\nd"
    assert arxiv.strip_comments(src) == "a \nb \\% percent\nc \\\\\n\nd"


def test_macro_definitions():
    only = arxiv.extract_macros("\\newcommand{\\R}{\\mathbb{R}}\\newcommand\\pair[2]{(#1, #2)}", with_arguments=False)
    assert list(only[0]) == ["\\R"] and only[1] == "\\newcommand\\pair[2]{(#1, #2)}"
    src = (
        "\\newcommand{\\R}{\\mathbb{R}}\\newcommand\\pair[2]{(#1, #2)}\\def\\abs#1{|#1|}"
        "\\newcommand{\\opt}[2][x]{#1+#2}\\def\\loop{\\loop}"
        "$\\R \\pair{a}{\\R} \\abs{y} \\opt{z} \\opt[w]{v} \\Rb \\loop$"
    )
    macros, rest = arxiv.extract_macros(src)
    out, n = arxiv.expand_macros(rest, macros)
    assert out == "$\\mathbb{R} (a, \\mathbb{R}) |y| x+z w+v \\Rb \\loop$"


def test_trim_requires_a_section():
    assert arxiv.trim_paper("\\begin{document}\nno sections here\n\\end{document}") is None
    assert arxiv.trim_paper("pre\n\\section{A}\nx\n\\bibliography{refs}\n\\end{document}\ntail") == "\\section{A}\nx"
    # the first section-like heading, as arxiv_cleaner.py: \subsection and \part count too
    assert arxiv.trim_paper("pre\n\\subsection*{A}\nx") == "\\subsection*{A}\nx"
    assert arxiv.trim_paper("pre\n\\part{One}\n\\section{A}") == "\\part{One}\n\\section{A}"


def test_bad_archive_and_empty_paper(tmp_path):
    bad = tmp_path / "2101.00001.tar.gz"
    bad.write_bytes(b"not a tar file at all")
    batches, stats, dead = read_all(arxiv, bad, arxiv.ArxivConfig())
    assert not batches and stats.dropped["unreadable_archive"] == 1 and str(bad) in dead[0]["error"]
    empty = tmp_path / "2101.00002"
    empty.mkdir()
    (empty / "fig.png").write_bytes(b"\x89PNG")
    batches, stats, dead = read_all(arxiv, empty, arxiv.ArxivConfig())
    assert stats.dropped["no_tex_files"] == 1


def test_tar_path_escape_ignored(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in [("../evil.tex", b"\\section{x} evil"), ("main.tex", (SAMPLE / "arxiv" / "1708.00137" / "main.tex").read_bytes())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    p = tmp_path / "p.tar.gz"
    p.write_bytes(buf.getvalue())
    assert list(arxiv.paper_files(str(p))) == ["main.tex"]
