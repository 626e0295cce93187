"""The one way a string a user or a file supplied is shown: in a terminal, in HTML, in markdown.

Run names, recipe paths, labels, error messages and notes come from users and from files, and
each output form has text that means something: rich reads `[bold]` and `[link=...]` as markup
(an unbalanced `[/bold]` in a run name made `lowcarb runs` crash for everyone sharing the store),
terminals obey escape sequences (`\\x1b[2J` clears the screen), HTML runs `<script>`, markdown
turns `*`, `_`, `[x](y)` and raw HTML into formatting and links. Every user string goes through
one of these functions on its way out:

    terminal(name)   -> rich Text (never parsed as markup or emoji), control characters visible
    plain(message)   -> str for print(): control characters visible
    html(name)       -> HTML-escaped text
    markdown(name)   -> text that markdown shows literally (one line)
    matplotlib(name) -> text that matplotlib does not read as mathtext
"""

from __future__ import annotations

import html as _html
import re
from typing import Any

from rich.text import Text

__all__ = ["html", "markdown", "matplotlib", "plain", "terminal"]

# C0 and C1 control characters except tab and newline: escape sequences, bells, carriage returns.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Characters markdown (CommonMark and GitHub's tables) may read as syntax. An underscore inside a
# word (params_before) is never emphasis, so it stays as it is and reads naturally in the source.
_MARKDOWN = re.compile(r"([\\`*\[\]|#~!]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")


def plain(value: Any) -> str:
    """`str(value)` with control characters written as `\\x1b` (visible, inert)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def terminal(value: Any, style: str = "") -> Text:
    """A rich Text of `value`: shown as typed, whatever brackets or colons it holds."""
    return Text(plain(value), style=style)


def html(value: Any) -> str:
    return _html.escape(plain(value), quote=True)


def markdown(value: Any) -> str:
    """One line of markdown that renders as the literal text (no links, HTML or emphasis)."""
    text = plain(value).replace("\r", " ").replace("\n", " ")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN.sub(r"\\\1", text)


def matplotlib(value: Any) -> str:
    """Text for a plot label: a `$` would start mathtext (and a bad formula fails the plot)."""
    return plain(value).replace("$", r"\$")
