"""Rendering a statistics report (the dict built by `reporting.shard_stats.build_report`).

A run folder's report opens with the whole run at a glance (`reporting/overview.py`: every job's
funnel, tokens per source and the mix against its target, the trainer's curves), then one section per
job, most important first. A table or plot with nothing to say (languages of a source without a
language field, perplexity of unscored documents, a "mix" of per-source shards without targets) is
left out.

- `render_terminal`: rich tables.
- `to_json`: the report as JSON (stable key order, for machines).
- `write_html`: DIR/index.html plus one PNG per plot next to it, referenced by relative path. The
  folder is self-contained (no scripts, style sheets, fonts or images from elsewhere), so it can be
  copied, zipped or served as it is; PNG files (rather than base64 inside the page) keep the page
  small and let the plots be reused on their own. Plots are drawn with matplotlib's Agg backend.
"""
from __future__ import annotations

import html
import json
import os
import re

from reporting.shard_stats import LENGTH_BINS_PER_OCTAVE, NO_LANGUAGE, QUALITY_NBINS, folders_of

TOP_LANGUAGES = 15
TOP_DOMAINS = 15
MAX_SHARD_ROWS = 40


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def _n(x) -> str:
    return "-" if x is None else f"{x:,}"


def _f(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:,.2f} MB"


# ---------------------------------------------------------------------------------------------------
# Tables as plain rows (shared by the terminal and the HTML renderers)


def funnel_rows(folder: dict) -> tuple[list[str], list[list[str]]] | None:
    f = folder.get("funnel")
    if not f:
        return None
    rows = []
    for s in f["stages"]:
        dropped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1])) or "-"
        rows.append([s["name"], _n(s["docs_in"]), _n(s["chars_in"]), _n(s["kept"]), _n(s["chars_out"]), _n(sum(s["dropped"].values())), dropped])
    rows.append(["total", _n(f["read"]), "", _n(f["kept"]), "", _n(sum(f["dropped"].values())), ", ".join(f"{k} {v:,}" for k, v in f["dropped"].items()) or "-"])
    return ["stage", "docs in", "chars in", "kept", "chars out", "dropped", "dropped by reason"], rows


def source_rows(folder: dict) -> tuple[list[str], list[list[str]]] | None:
    if not folder["shards"]:
        return None  # a job that writes models, not shards (train-lm, train-quality): only its funnel
    unit = folder["length_unit"]
    rows = []
    for name, s in list(folder["sources"].items()) + [("total", folder["total"])]:
        rows.append([name, _n(s["docs"]), _mb(s["bytes"]), _n(s["chars"]), _n(s["tokens"]), _f(s["mean_length"]), _f(s["median_length"], 0)])
    return ["source", "docs", "bytes", "chars", "tokens", f"mean length ({unit})", f"median length ({unit}, ≈)"], rows


def shard_rows(folder: dict) -> tuple[list[str], list[list[str]]] | None:
    if not folder["shards"]:
        return None
    unit = folder["length_unit"]
    rows = []
    shards = folder["shards"]
    for s in shards[:MAX_SHARD_ROWS]:
        rows.append([s["name"], ",".join(s["sources"]), _mb(s["file_bytes"]), _n(s["docs"]), _mb(s["bytes"]), _n(s["tokens"]), _f(s["mean_length"]), _f(s["median_length"], 0)])
    if len(shards) > MAX_SHARD_ROWS:
        rows.append([f"... {len(shards) - MAX_SHARD_ROWS} more (see --json)", "", "", "", "", "", "", ""])
    return ["shard", "sources", "file", "docs", "text/token bytes", "tokens", f"mean ({unit})", f"median ({unit}, ≈)"], rows


def known_languages(folder: dict) -> list[dict]:
    """The language rows, or [] when no document has a language (the field is empty for the source)."""
    langs = (folder.get("total") or {}).get("languages") or []
    return langs if any(x["language"] != NO_LANGUAGE for x in langs) else []


def language_rows(folder: dict) -> tuple[list[str], list[list[str]]] | None:
    langs = known_languages(folder)
    if not langs:
        return None
    rows = [[x["language"], _n(x["docs"]), _pct(x["share"]), _f(x["mean_score"], 3)] for x in langs[:TOP_LANGUAGES]]
    if len(langs) > TOP_LANGUAGES:
        rest = langs[TOP_LANGUAGES:]
        rows.append([f"{len(rest)} others", _n(sum(x["docs"] for x in rest)), _pct(sum(x["share"] for x in rest)), ""])
    return ["language", "docs", "share", "mean score"], rows


def bucket_rows(folder: dict) -> tuple[list[str], list[list[str]]] | None:
    t = folder["total"]
    if "buckets" not in t or not t["perplexity"]["scored"]:
        return None
    rows = [[b, _n(v["docs"]), _pct(v["share"]), _n(v["chars"]), _pct(v["char_share"])] for b, v in t["buckets"].items()]
    ppl = t["perplexity"]
    rows.append([f"median perplexity ≈ {_f(ppl['median'])}", f"{ppl['scored']:,} scored", "", "", ""])
    return ["bucket", "docs", "share", "chars", "char share"], rows


def quality_rows(folder: dict) -> tuple[list[str], list[list[str]]] | None:
    q = folder["total"].get("quality")
    if not q or not q["scored"]:
        return None
    width = 1 / QUALITY_NBINS
    counts = q["hist"]["counts"]
    peak = max(counts) or 1
    rows = [[f"{i * width:.2f}-{(i + 1) * width:.2f}", _n(c), "█" * round(30 * c / peak)] for i, c in enumerate(counts)]
    rows.append([f"mean {q['mean']:.3f}", f"{q['scored']:,} scored", f"{q['unscored']:,} unscored"])
    return ["quality score", "docs", ""], rows


def domain_rows(folder: dict) -> tuple[list[str], list[list[str]]] | None:
    d = folder["total"].get("domains")
    if not d or not d["top"]:
        return None
    docs = folder["total"]["docs"]
    rows = [[name, _n(n), _pct(n / docs if docs else 0)] for name, n in d["top"][:TOP_DOMAINS]]
    note = f"{d['distinct']:,} distinct; {d['no_domain']:,} without URL" + ("" if d["exact"] else f"; {d['other']:,} docs in domains past a shard's top 1000")
    rows.append([note, "", ""])
    return ["domain", "docs", "share"], rows


def mix_rows(folder: dict) -> tuple[list[str], list[list[str]]] | None:
    mix = folder.get("mix")
    if not mix or not folder.get("is_mix"):
        return None
    rows = [
        [r["source"], _n(r["docs"]), _n(r["tokens"]), _pct(r["achieved"]), _pct(r["target"]),
         "-" if r["deviation"] is None else f"{100 * r['deviation']:+.2f} pt", _f(r["epochs"], 2)]
        for r in mix["sources"]
    ]  # fmt: skip
    rows.append(["total", "", _n(mix["total_tokens"]), "", "", "", ""])
    return ["source", "docs", "tokens", "achieved", "target", "achieved - target", "epochs"], rows


def _epochs(r: dict) -> str:
    return _f(r["epochs"], 2) + (" ⚠ repeated" if r.get("repeated") else "")


def overview_funnel_rows(overview: dict) -> tuple[list[str], list[list[str]]] | None:
    if not overview["funnel"]:
        return None
    rows = []
    for r in overview["funnel"]:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in r["top_dropped"]) or "-"
        if r["other_reasons"]:
            reasons += f", {r['other_reasons']} more"
        rows.append([r["name"] if r["name"] == r["job"] else f"{r['name']} ({r['job']})", _n(r["read"]), _n(r["kept"]), _pct(r["kept_share"]), _n(r["dropped"]), reasons])
    return ["job", "read", "kept", "kept share", "dropped", "top drop reasons"], rows


def overview_source_rows(overview: dict) -> tuple[list[str], list[list[str]]] | None:
    if not overview["sources"]:
        return None
    rows = [
        [r["source"], _n(r["docs"]), _n(r["tokens"]), _n(r["mix_tokens"]), _pct(r["achieved"]), _pct(r["target"]), _epochs(r)]
        for r in overview["sources"]
    ]
    if overview["mix"]:
        rows.append(["total", "", "", _n(overview["mix"]["total_tokens"]), "", "", ""])
    return ["source", "documents kept", "tokens", "tokens in the mix", "achieved", "target", "epochs"], rows


def training_rows(training: dict) -> tuple[list[str], list[list[str]]]:
    s = training["summary"]
    rows = [
        ["model", s["model"] or "-"], ["steps", _n(s["steps"])], ["tokens trained", _n(s["tokens"])],
        ["last training loss", _f(s["last_loss"], 4)], ["last validation loss", _f(s["last_val_loss"], 4)],
        ["best validation loss", _f(s["best_val_loss"], 4)], ["median tokens/s", _f(s["median_tokens_per_s"], 0)],
        ["peak memory (GiB)", _f(s["peak_memory_gib"], 2)],
    ]  # fmt: skip
    return ["trainer", ""], rows


def _overview_tables(overview: dict) -> list[tuple[str, tuple | None]]:
    tables = [("Every job's funnel (stats.json)", overview_funnel_rows(overview)),
              ("Tokens per source and the mix against its target", overview_source_rows(overview))]
    tables += [(f"Trainer: {t['name']}", training_rows(t)) for t in overview["training"]]
    return tables


def _tables(folder: dict) -> list[tuple[str, tuple | None]]:
    if folder["kind"] == "train":
        return [("Trainer", training_rows(folder["training"]))]
    return [
        ("Funnel (stats.json)", funnel_rows(folder)),
        ("Per source", source_rows(folder)),
        ("Per shard", shard_rows(folder)),
        ("Languages", language_rows(folder)),
        ("Perplexity buckets", bucket_rows(folder)),
        ("Quality score", quality_rows(folder)),
        ("Top domains", domain_rows(folder)),
        ("Mix against target", mix_rows(folder)),
    ]


# ---------------------------------------------------------------------------------------------------
# Terminal


LEFT_COLUMNS = ("dropped by reason", "top drop reasons", "sources", "")


def render_terminal(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()

    def print_tables(tables):
        for title, table in tables:
            if table is None:
                continue
            header, rows = table
            t = Table(title=title, title_justify="left", show_lines=False)
            for i, h in enumerate(header):
                t.add_column(h, justify="left" if i == 0 or h in LEFT_COLUMNS else "right", no_wrap=i == 0)
            for row in rows:
                t.add_row(*row)
            console.print(t)

    if report.get("kind") == "run":
        console.rule(f"[bold]the run at a glance[/bold]  {report['path']}")
        print_tables(_overview_tables(report["overview"]))
        for w in report["overview"]["repeats"]:
            console.print(f"[bold yellow]repeated data:[/bold yellow] {w['message']}", highlight=False)
    for folder in folders_of(report):
        console.rule(f"[bold]{folder['job']}[/bold]  {folder['path']}  ({folder['kind']})")
        print_tables(_tables(folder))
        for w in folder.get("repeats", []):
            console.print(f"[bold yellow]repeated data:[/bold yellow] {w['message']}", highlight=False)
        for p in folder["problems"]:
            console.print(f"[bold red]unreadable:[/bold red] {p['file']}: {p['error']}", highlight=False)
        for w in folder.get("warnings", []):
            console.print(f"[yellow]warning:[/yellow] {w['file']}: {w['error']}", highlight=False)


# ---------------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "svg.hashsalt": "corpusmill"})
    return plt


def _save(fig, path: str) -> None:
    # No timestamp or software version in the PNG: the same report gives the same bytes.
    fig.savefig(path, format="png", metadata={"Software": None}, bbox_inches="tight")
    fig.clf()


def plot_funnel(folder: dict, path: str) -> bool:
    f = folder.get("funnel")
    if not f or not f["stages"] or not any(s["dropped"] for s in f["stages"]):
        return False  # nothing dropped: the table's "read = kept" says it all
    plt = _plt()
    stages = f["stages"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(stages) + 1.2))
    names = [s["name"] for s in stages][::-1]
    kept = [s["kept"] for s in stages][::-1]
    dropped = [sum(s["dropped"].values()) for s in stages][::-1]
    ax.barh(names, kept, color="#4c72b0", label="kept")
    ax.barh(names, dropped, left=kept, color="#dd8452", label="dropped")
    for y, (k, d) in enumerate(zip(kept, dropped)):
        ax.text(k + d, y, f" {k:,} kept" + (f", {d:,} dropped" if d else ""), va="center", fontsize=8)
    ax.set_xlabel("documents")
    ax.set_xlim(0, max(k + d for k, d in zip(kept, dropped)) * 1.3 or 1)
    ax.set_title(f"{folder['job']}: documents per stage")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the bars and their labels
    _save(fig, path)
    plt.close(fig)
    return True


def plot_languages(folder: dict, path: str) -> bool:
    langs = known_languages(folder)
    if len(langs) < 2:  # one bar says no more than the table
        return False
    plt = _plt()
    top = langs[:20]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar([x["language"] for x in top], [x["docs"] for x in top], color="#4c72b0")
    ax.set_ylabel("documents")
    ax.set_title(f"{folder['job']}: languages (top {len(top)} of {len(langs)})")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_perplexity(folder: dict, path: str) -> bool:
    ppl = (folder.get("total") or {}).get("perplexity")
    if not ppl or not ppl["scored"]:
        return False
    plt = _plt()
    width = ppl["hist"]["log10_bin_width"]
    first = ppl["hist"]["first_bin"]
    counts = ppl["hist"]["counts"]
    edges = [10 ** ((first + i) * width) for i in range(len(counts) + 1)]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.stairs(counts, edges, fill=True, color="#55a868")
    ax.set_xscale("log")
    ax.set_xlabel("perplexity")
    ax.set_ylabel("documents")
    shares = ", ".join(f"{b} {100 * v['share']:.0f} %" for b, v in folder["total"]["buckets"].items())
    ax.set_title(f"{folder['job']}: perplexity ({shares})")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_quality(folder: dict, path: str) -> bool:
    q = (folder.get("total") or {}).get("quality")
    if not q or not q["scored"]:
        return False
    plt = _plt()
    counts = q["hist"]["counts"]
    edges = [i / len(counts) for i in range(len(counts) + 1)]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.stairs(counts, edges, fill=True, color="#8172b3")
    ax.set_xlabel("quality score (P(reference))")
    ax.set_ylabel("documents")
    ax.set_title(f"{folder['job']}: quality score, mean {q['mean']:.3f}")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_mix(folder: dict, path: str) -> bool:
    mix = folder.get("mix")
    if not mix or not mix["sources"] or not folder.get("is_mix"):
        return False
    plt = _plt()
    rows = mix["sources"]
    xs = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar([x - 0.2 for x in xs], [100 * r["achieved"] for r in rows], width=0.4, label="achieved", color="#4c72b0")
    ax.bar([x + 0.2 for x in xs], [100 * (r["target"] or 0) for r in rows], width=0.4, label="target", color="#c44e52")
    ax.set_xticks(xs, [r["source"] for r in rows], rotation=20)
    ax.set_ylabel("% of tokens")
    ax.set_title(f"{folder['job']}: mix against target")
    ax.legend()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_training(folder: dict, path: str) -> bool:
    t = folder.get("training")
    if not t or not t["loss"]:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot([s for s, _ in t["loss"]], [v for _, v in t["loss"]], color="#4c72b0", label="training loss")
    if t["val_loss"]:
        ax.plot([s for s, _ in t["val_loss"]], [v for _, v in t["val_loss"]], "o-", color="#c44e52", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"{folder['name']}: loss")
    ax.legend()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_lengths(folder: dict, path: str) -> bool:
    if folder["kind"] == "train":
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    drawn = False
    items = list(folder["sources"].items()) if len(folder["sources"]) > 1 else [("all", folder["total"])]
    for name, s in items:
        h = s["length_hist"]
        if not h["counts"]:
            continue
        first = max(h["first_bin"], 1)  # empty documents (bin 0) have no place on a log axis
        counts = h["counts"][first - h["first_bin"] :]
        if not counts:
            continue
        edges = [2 ** ((first - 1 + i) / LENGTH_BINS_PER_OCTAVE) for i in range(len(counts) + 1)]
        ax.stairs(counts, edges, label=name)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_xlabel(f"document length ({folder['length_unit']})")
    ax.set_ylabel("documents")
    ax.set_title(f"{folder['job']}: document lengths")
    if len(items) > 1:
        ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return True


PLOTS = [
    ("funnel", "Funnel", plot_funnel),
    ("languages", "Languages", plot_languages),
    ("perplexity", "Perplexity", plot_perplexity),
    ("quality", "Quality score", plot_quality),
    ("mix", "Mix against target", plot_mix),
    ("lengths", "Document lengths", plot_lengths),
    ("training", "Training and validation loss", plot_training),
]


# ---------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th.text, td.text { text-align: left; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
.problem { color: #b00; } .warning { color: #a60; }
section { border-top: 2px solid #ddd; margin-top: 1.5em; } #overview { border-top: 3px solid #4c72b0; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "job"


def _html_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    left = [i == 0 or h in LEFT_COLUMNS for i, h in enumerate(header)]  # text columns; numbers align right

    def cell(tag: str, i: int, text: str) -> str:
        return f"<{tag} class=\"text\">{e(text)}</{tag}>" if left[i] else f"<{tag}>{e(text)}</{tag}>"

    out = [f"<table><caption>{e(title)}</caption><thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(cell("td", i, str(c)) for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _html_notes(folder: dict) -> list[str]:
    e = html.escape
    out = [f"<p class=\"warning\"><b>repeated data:</b> {e(w['message'])}</p>" for w in folder.get("repeats", [])]
    out += [f"<p class=\"problem\">unreadable: {e(p['file'])}: {e(p['error'])}</p>" for p in folder["problems"]]
    out += [f"<p class=\"warning\">warning: {e(w['file'])}: {e(w['error'])}</p>" for w in folder.get("warnings", [])]
    return out


def _html_overview(report: dict, out_dir: str, written: set) -> list[str]:
    """The run at a glance: its tables, then the mix's and the trainer's plots."""
    e = html.escape
    overview = report["overview"]
    body = ["<section id=\"overview\"><h2>The run at a glance</h2>"]
    body += [f"<p class=\"warning\"><b>repeated data:</b> {e(w['message'])}</p>" for w in overview["repeats"]]
    for title, table in _overview_tables(overview):
        if table is not None:
            body.append(_html_table(title, *table))
    folders = folders_of(report)
    plots = [(f, "mix", "Mix against target", plot_mix) for f in folders if f.get("is_mix")][:1]
    plots += [(f, "training", "Training and validation loss", plot_training) for f in folders if f["kind"] == "train"]
    for folder, key, title, plot in plots:
        name = f"00-run-{_slug(folder['name'])}-{key}.png"
        if plot(folder, os.path.join(out_dir, name)):
            written.add(name)
            body.append(f"<h3>{e(folder['name'])}: {e(title)}</h3><img src=\"{e(name)}\" alt=\"{e(folder['name'] + ': ' + title)}\">")
    body.append("<p>Jobs, most important first: " + ", ".join(
        f"<a href=\"#job-{_slug(f['name'])}\">{e(f['name'])}</a>" for f in folders) + "</p></section>")
    return body


def write_html(report: dict, out_dir: str) -> str:
    """Writes OUT_DIR/index.html and its PNGs; returns the path of index.html."""
    os.makedirs(out_dir, exist_ok=True)
    e = html.escape
    body = [f"<h1>corpusmill stats</h1><p>{e(report['path'])} ({e(report['kind'])})</p>"]
    written: set[str] = set()
    in_overview = set()
    if report.get("kind") == "run":
        body += _html_overview(report, out_dir, written)
        in_overview = {"mix", "training"}  # drawn once, at the top
    for i, folder in enumerate(folders_of(report), 1):
        body.append(f"<section class=\"job\" id=\"job-{_slug(folder['name'])}\">")
        body.append(f"<h2>{e(folder['job'])} <small>{e(folder['path'])} ({e(folder['kind'])})</small></h2>")
        body += _html_notes(folder)
        for key, title, plot in PLOTS:
            name = f"{i:02d}-{_slug(folder['name'])}-{key}.png"
            if key not in in_overview and plot(folder, os.path.join(out_dir, name)):
                written.add(name)
                body.append(f"<h3>{e(title)}</h3><img src=\"{e(name)}\" alt=\"{e(folder['job'] + ': ' + title)}\">")
        for title, table in _tables(folder):
            if table is not None:
                body.append(_html_table(title, *table))
        body.append("</section>")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>corpusmill stats: "
        + e(report["path"]) + "</title><style>" + _CSS + "</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )  # fmt: skip
    for name in os.listdir(out_dir):  # plots of an earlier report that this one does not have
        if name.endswith(".png") and name not in written and re.match(r"^\d\d-.*\.png$", name):
            os.remove(os.path.join(out_dir, name))
    index = os.path.join(out_dir, "index.html")
    tmp = index + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, index)
    return index
