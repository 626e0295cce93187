"""Names a user or a file supplied are shown literally in every output form (issue 19 items 1, 13)."""

import io
import re

import pytest
from rich.console import Console

from lowcarb.report import compare_rows, render_html, render_markdown
from lowcarb.report import escape as esc
from lowcarb.report.terminal import final_table, table_from_rows

HOSTILE = [
    "[/bold] x",
    "[link=https://evil.example]click[/link]",
    ":smile: [red]red[/red]",
    "<script>alert(1)</script>",
    "*bold* _it_ `code` [a](javascript:alert(1)) ![i](x.png) | pipe # h ~s~",
    "clear \x1b[2J screen \x07 bell \r return",
    "$\\frac{1}{0$",
]


def test_plain_makes_control_characters_visible():
    assert esc.plain("a\x1b[2Jb\x07\x9bc\td\ne") == "a\\x1b[2Jb\\x07\\x9bc\td\ne"


def test_terminal_text_is_never_markup():
    out = io.StringIO()
    console = Console(file=out, markup=True, emoji=True, width=200, force_terminal=True)
    for name in HOSTILE:
        console.print(esc.terminal(name))
    text = out.getvalue()
    assert "[/bold] x" in text and "[link=https://evil.example]click[/link]" in text
    assert ":smile:" in text and "\x1b]8;" not in text  # no hyperlink escape
    assert "\x1b[2J" not in text and "\x07" not in text


@pytest.mark.parametrize("name", HOSTILE)
def test_markdown_shows_the_literal_text(name):
    md = esc.markdown(name)
    assert "\n" not in md and "<" not in md and ">" not in md
    # Every markdown character is escaped: no unescaped one is left to format.
    assert not re.search(r"(?<!\\)[*`\[\]|#~!]", md)
    assert not re.search(r"(?<![\\0-9A-Za-z])_|(?<!\\)_(?![0-9A-Za-z])", md)
    assert md.replace("\\", "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == (
        esc.plain(name).replace("\\", "").replace("\r", " ").replace("\n", " ")
    )


def test_matplotlib_labels_are_not_mathtext():
    assert esc.matplotlib("$x$") == r"\$x\$"


def _hostile_run(run, name):
    run = dict(run, name=name, source=name, error=name, id=name)
    stages = [dict(s) for s in run["stages"]]
    stages[3] = dict(stages[3], summary={name: name})
    return dict(run, stages=stages)


@pytest.mark.parametrize("name", HOSTILE)
def test_reports_of_a_hostile_run_render_and_escape(two_model_run, name):
    run = _hostile_run(two_model_run, name)
    md = render_markdown(run)
    assert "<script>" not in md and "\x1b" not in md
    assert not re.search(r"(?<!\\)\]\(", md)  # no link: every ] before ( is escaped
    assert "[/bold]" not in md  # brackets escaped: \[/bold\]
    page = render_html(run)
    assert "<script>alert" not in page and "\x1b" not in page
    out = io.StringIO()
    console = Console(file=out, markup=True, width=200, force_terminal=True)
    console.print(final_table(run))
    headers, body = compare_rows(run, run)
    console.print(table_from_rows(f"compare {name}", headers, body))
    assert "\x1b[2J" not in out.getvalue() and "\x1b]8;" not in out.getvalue()
