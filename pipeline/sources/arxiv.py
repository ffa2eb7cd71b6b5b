"""ArXiv (LLaMA §2.1: "We process arXiv LaTeX files ... We removed everything before the first
section, as well as the bibliography. We also removed the comments from the .tex files, and
inline-expanded definitions and macros written by users to increase consistency across papers.")

    read (a paper = a folder or a .tar.gz / .tgz of its sources) -> latex_comments -> latex_macros
        -> latex_trim -> drop_empty

- read: the paper's .tex files (UTF-8, else cp1252). The main file is the one with \\documentclass
  and \\begin{document} (the largest after inlining when several: cover letters and rebuttals are
  left out, counted under notes); \\input{..}, \\include{..}, \\subfile{..} of the paper's own files
  are inlined (depth <= 8). A paper with no .tex file goes as `no_tex_files`; with no main file the
  .tex files are concatenated in path order.
- latex_comments: '%' to end of line (not '\\%'), lines that held only a comment, and
  \\begin{comment}..\\end{comment} blocks are removed.
- latex_macros: as RedPajama's arxiv_cleaner (data_prep/arxiv/arxiv_cleaner.py, rp_v1): macros
  without arguments, defined by \\newcommand / \\renewcommand / \\providecommand or \\def, are
  expanded where used and their definitions removed (nested ones too, up to `max_expansion_passes`,
  5). `macros_with_arguments` (`--arxiv-macros-with-arguments`) also expands macros with [n]
  arguments (and an [optional default]) and \\def with #1..#9 parameters.
- latex_trim: everything before the first section-like heading (\\chapter, \\part, \\section,
  \\subsection, \\subsubsection) goes; a paper with none goes as `no_section`; the text ends at the
  first \\appendix or bibliography (thebibliography or references environment, \\bibliography{..},
  \\printbibliography), whichever comes first, as in arxiv_cleaner; and at \\end{document}.
  `keep_appendix` (`--arxiv-keep-appendix`) keeps the appendix and removes only the bibliography.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import tarfile
import zlib
from typing import Iterator

from pipeline.accounting import StageStats
from pipeline.runs import InputError
from pipeline.sources.common import BatchBuilder, DropEmpty, decode_text
from pipeline.step import TextStep

SOURCE = "arxiv"
STAGES = ["read", "latex_comments", "latex_macros", "latex_trim", "drop_empty"]
GLOBAL = None


@dataclasses.dataclass
class ArxivConfig:
    max_expansion_passes: int = 5
    macros_with_arguments: bool = False  # RedPajama expands argument-less macros only
    keep_appendix: bool = False  # RedPajama cuts at \\appendix as at the bibliography
    batch_records: int = 8

    def check_models(self) -> None:
        pass

    def before(self) -> list:
        return [
            StripComments(),
            ExpandMacros(passes=self.max_expansion_passes, with_arguments=self.macros_with_arguments),
            TrimPaper(keep_appendix=self.keep_appendix),
            DropEmpty(),
        ]

    def after(self) -> list:
        return []


def expand(patterns: list[str]) -> list[str]:
    import glob

    out = set()
    for pat in patterns:
        for p in glob.glob(os.path.expanduser(pat)):
            if os.path.isdir(p) or p.endswith((".tar.gz", ".tgz", ".tar")):
                out.add(p)
    if not out:
        raise InputError(f"no arXiv paper (a folder or a .tar.gz of LaTeX sources) matches {' '.join(map(repr, patterns))}")
    return sorted(out)


def paper_files(path: str) -> dict[str, bytes]:
    """Relative path -> bytes of the paper's .tex files."""
    files = {}
    if os.path.isdir(path):
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(".tex"):
                    full = os.path.join(dirpath, name)
                    try:
                        with open(full, "rb") as f:
                            files[os.path.relpath(full, path).replace(os.sep, "/")] = f.read()
                    except OSError as err:
                        raise InputError(f"{full}: cannot be read: {type(err).__name__}: {err}") from err
        return files
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile() and member.name.lower().endswith(".tex"):
                    name = posixpath.normpath(member.name.lstrip("/"))
                    if name.startswith(".."):
                        continue  # a path escaping the archive: never followed
                    files[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise InputError(f"{path}: not a readable tar archive: {type(err).__name__}: {err}") from err
    return files


_INPUT = re.compile(r"\\(?:input|include|subfile)\s*(?:\{\s*([^}]+?)\s*\}|\s+([A-Za-z0-9_./-]+))")
_MAIN = re.compile(r"\\documentclass")
_BEGIN_DOC = re.compile(r"\\begin\s*\{document\}")


def _resolve(name: str, base_dir: str, texts: dict[str, str]) -> str | None:
    for cand in (posixpath.join(base_dir, name), name):
        cand = posixpath.normpath(cand)
        for c in (cand, cand + ".tex"):
            if c in texts:
                return c
    return None


def inline_inputs(main: str, texts: dict[str, str], used: set, depth: int = 0) -> str:
    base = posixpath.dirname(main)

    def sub(m):
        target = _resolve((m.group(1) or m.group(2)).strip(), base, texts)
        if target is None or depth >= 8 or target == main:
            return m.group(0)  # a package (\input xy) or a missing file: left for the later steps
        used.add(target)
        return inline_inputs(target, texts, used, depth + 1)

    # Comments first, so that a commented-out \input is not inlined.
    return _INPUT.sub(sub, strip_comments(texts[main]))


def assemble(files: dict[str, bytes]) -> tuple[str, dict]:
    texts = {name: decode_text(data, hint=None)[0] for name, data in files.items()}
    mains = [n for n, t in texts.items() if _MAIN.search(strip_comments(t)) and _BEGIN_DOC.search(t)]
    if not mains:
        return "\n".join(strip_comments(texts[n]) for n in sorted(texts)), {"main": None, "files": len(texts)}
    best, best_text, best_used = None, "", set()
    for name in sorted(mains):
        used: set = set()
        text = inline_inputs(name, texts, used)
        if len(text) > len(best_text):
            best, best_text, best_used = name, text, used
    return best_text, {"main": best, "files": len(texts), "inlined": sorted(best_used), "other_main_files": len(mains) - 1}


def read(path: str, file_index: int, stats: StageStats, dead: list[dict], config: ArxivConfig) -> Iterator:
    builder = BatchBuilder(SOURCE, file_index, config.batch_records)
    stats.docs_in += 1
    try:
        files = paper_files(path)
    except InputError as err:
        stats.drop("unreadable_archive")
        dead.append({"file": path, "record": 0, "reason": "unreadable_archive", "error": str(err)[:500]})
        return
    if not files:
        stats.drop("no_tex_files")
        dead.append({"file": path, "record": 0, "reason": "no_tex_files", "error": "no .tex file in the paper"})
        return
    text, meta = assemble(files)
    if meta.get("other_main_files"):
        stats.notes["other_main_files_left_out"] += meta["other_main_files"]
    stats.docs_out += 1
    paper = os.path.basename(os.path.normpath(path))
    for ext in (".tar.gz", ".tgz", ".tar"):
        if paper.endswith(ext):
            paper = paper[: -len(ext)]
    url = f"https://arxiv.org/abs/{paper}" if re.fullmatch(r"\d{4}\.\d{4,5}(v\d+)?", paper) else None
    yield builder.add(0, paper, text, url=url, metadata={"paper": paper, **meta}) or builder.flush()


# --- comments ----------------------------------------------------------------------------------------

_COMMENT = re.compile(r"(?<!\\)((?:\\\\)*)%[^\n]*")
_COMMENT_ONLY_LINE = re.compile(r"^[ \t]*%[^\n]*\n", re.M)
_COMMENT_ENV = re.compile(r"\\begin\s*\{comment\}.*?\\end\s*\{comment\}", re.S)


def strip_comments(text: str) -> str:
    text = _COMMENT_ONLY_LINE.sub("", text)
    text = _COMMENT.sub(r"\1", text)
    return _COMMENT_ENV.sub("", text)


@dataclasses.dataclass
class StripComments(TextStep):
    name: str = "latex_comments"

    def transform(self, text, row, batch, notes):
        return strip_comments(text), None


# --- macros -----------------------------------------------------------------------------------------

def _group(text: str, i: int) -> tuple[str, int] | None:
    """The balanced {..} group starting at text[i] (after whitespace): (content, index after it)."""
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
        j += 1
    return None


def _argument(text: str, i: int) -> tuple[str, int] | None:
    """One macro argument: a {group}, or a single token (\\cmd or one character)."""
    g = _group(text, i)
    if g is not None:
        return g
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i >= len(text):
        return None
    if text[i] == "\\":
        m = re.match(r"\\(?:[A-Za-z@]+|.)", text[i:])
        return m.group(0), i + m.end()
    return text[i], i + 1


_NEWCOMMAND = re.compile(r"\\(?:re)?(?:newcommand|providecommand)\*?\s*")
_DEF = re.compile(r"\\(?:g|e|x)?def\s*(\\[A-Za-z@]+)((?:#\d)*)\s*")


@dataclasses.dataclass
class Macro:
    nargs: int
    default: str | None
    body: str


def extract_macros(text: str, with_arguments: bool = True) -> tuple[dict[str, Macro], str]:
    """Finds the definitions (of argument-less macros only, unless `with_arguments`), returns them
    and the text without them."""
    macros: dict[str, Macro] = {}
    out, i = [], 0
    for m in re.finditer(r"\\(?:(?:re)?(?:newcommand|providecommand)|[gex]?def)(?![A-Za-z@])", text):
        if m.start() < i:
            continue
        parsed = _parse_definition(text, m.start())
        if parsed is None:
            continue
        name, macro, end = parsed
        if macro.nargs and not with_arguments:
            continue
        if name not in macros or not text[m.start() :].startswith("\\providecommand"):
            macros[name] = macro
        out.append(text[i : m.start()])
        i = end
    out.append(text[i:])
    return macros, "".join(out)


def _parse_definition(text: str, start: int):
    m = _NEWCOMMAND.match(text, start)
    if m:
        i = m.end()
        name_group = _group(text, i)
        if name_group is not None:
            name, i = name_group[0].strip(), name_group[1]
        else:
            nm = re.match(r"\s*(\\[A-Za-z@]+)", text[i:])
            if not nm:
                return None
            name, i = nm.group(1), i + nm.end()
        if not re.fullmatch(r"\\[A-Za-z@]+", name):
            return None
        nargs, default = 0, None
        opt = re.match(r"\s*\[(\d)\]", text[i:])
        if opt:
            nargs, i = int(opt.group(1)), i + opt.end()
            dflt = re.match(r"\s*\[([^\]]*)\]", text[i:])
            if dflt:
                default, i = dflt.group(1), i + dflt.end()
        body = _group(text, i)
        if body is None:
            return None
        return name, Macro(nargs, default, body[0]), body[1]
    m = _DEF.match(text, start)
    if m:
        body = _group(text, m.end())
        if body is None:
            return None
        return m.group(1), Macro(len(m.group(2)) // 2, None, body[0]), body[1]
    return None


def expand_macros(text: str, macros: dict[str, Macro], passes: int = 5, max_growth: float = 3.0) -> tuple[str, int]:
    """Replaces each use of a macro with its body, arguments substituted; (text, expansions).
    Indirect recursion is cut by `passes`; a pass that would grow the text past `max_growth` times
    its size is not applied (macro-heavy sources such as TikZ/xypic libraries)."""
    # A macro whose body uses itself (directly) never terminates under expansion: left as is.
    macros = {k: v for k, v in macros.items() if not re.search(re.escape(k) + r"(?![A-Za-z@])", v.body)}
    if not macros:
        return text, 0
    limit = max_growth * len(text) + 10_000
    names = sorted(macros, key=len, reverse=True)
    use = re.compile("(" + "|".join(re.escape(n) for n in names) + r")(?![A-Za-z@])")
    total = 0
    for _ in range(passes):
        out, i, n = [], 0, 0
        for m in use.finditer(text):
            if m.start() < i:
                continue
            macro = macros[m.group(1)]
            j, args = m.end(), []
            if macro.nargs and macro.default is not None:
                opt = re.match(r"\s*\[([^\]]*)\]", text[j:])
                if opt:
                    args.append(opt.group(1))
                    j += opt.end()
                else:
                    args.append(macro.default)
            while len(args) < macro.nargs:
                arg = _argument(text, j)
                if arg is None:
                    break
                args.append(arg[0])
                j = arg[1]
            if len(args) < macro.nargs:
                continue
            body = macro.body
            for k, a in enumerate(args, 1):
                body = body.replace(f"#{k}", a)
            # A control word followed by a letter would merge with it: keep them apart.
            if re.search(r"\\[A-Za-z@]+$", body) and j < len(text) and text[j].isalpha():
                body += " "
            out.append(text[i : m.start()])
            out.append(body)
            i = j
            n += 1
        out.append(text[i:])
        new = "".join(out)
        if len(new) > limit:
            break
        text = new
        total += n
        if n == 0:
            break
    return text, total


@dataclasses.dataclass
class ExpandMacros(TextStep):
    passes: int = 5
    with_arguments: bool = False
    name: str = "latex_macros"

    def transform(self, text, row, batch, notes):
        macros, rest = extract_macros(text, self.with_arguments)
        expanded, n = expand_macros(rest, macros, self.passes)
        notes["macros_defined"] += len(macros)
        notes["macro_uses_expanded"] += n
        return expanded, None


# --- trim ---------------------------------------------------------------------------------------------

# The first section-like heading (arxiv_cleaner.py:370-378; its \\paragraph alternative never matches).
_FIRST_SECTION = re.compile(r"\\(?:chapter|part|section|subsection|subsubsection)\b\s*\*?\s*[\[{]")
# Where the paper's text ends (arxiv_cleaner.py:412-418): the appendix or the bibliography, whichever
# comes first, and everything after it; \\printbibliography (biblatex) counts as the bibliography.
_CUT = re.compile(r"\\appendix\b|\\begin\{references\}|\\begin\{REFERENCES\}|\\begin\s*\{thebibliography\}"
                  r"|\\bibliography\s*\{|\\printbibliography\b")
# With `keep_appendix`: only the bibliography goes.
_BIBLIOGRAPHY = re.compile(
    r"\\begin\s*\{thebibliography\}.*?(?:\\end\s*\{thebibliography\}|\Z)"
    r"|\\bibliography\s*\{[^}]*\}|\\bibliographystyle\s*\{[^}]*\}|\\printbibliography\b(?:\[[^\]]*\])?",
    re.S,
)
_END_DOC = re.compile(r"\\end\s*\{document\}")
_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*){2,}")


def trim_paper(text: str, keep_appendix: bool = False) -> str | None:
    m = _FIRST_SECTION.search(text)
    if not m:
        return None
    body = text[m.start() :]
    end = _END_DOC.search(body)
    if end:
        body = body[: end.start()]
    if keep_appendix:
        body = _BIBLIOGRAPHY.sub("", body)
    else:
        cut = _CUT.search(body)
        if cut:
            body = body[: cut.start()]
    return _BLANK_RUNS.sub("\n\n", body).strip()


@dataclasses.dataclass
class TrimPaper(TextStep):
    keep_appendix: bool = False
    name: str = "latex_trim"

    def transform(self, text, row, batch, notes):
        body = trim_paper(text, self.keep_appendix)
        return (body, None) if body is not None else (None, "no_section")


def config_from_args(args) -> ArxivConfig:
    d = ArxivConfig()
    return ArxivConfig(
        macros_with_arguments=bool(getattr(args, "arxiv_macros_with_arguments", False)),
        keep_appendix=bool(getattr(args, "arxiv_keep_appendix", False)),
        batch_records=getattr(args, "batch_records", None) or d.batch_records,
    )
