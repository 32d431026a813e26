"""The viewer's own page: an address bar, back and forward, the page in a sandboxed frame.

It has no script at all: every control is a link or a form to the viewer, so the page
works in a browser with scripts off (Tor Browser's "Safest") and has nothing to exploit.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

if TYPE_CHECKING:
    from .viewer import Entry, Viewer

# The page's frame may send a GET form and, when the user clicks, lead this page elsewhere:
# no script, no popup, no origin of its own (so nothing of the viewer's is its to read).
SANDBOX = "allow-forms allow-top-navigation-by-user-activation"
_STYLE = """
body { margin: 0; font: 14px system-ui, sans-serif; display: flex; flex-direction: column; height: 100vh; }
nav { display: flex; gap: 6px; padding: 6px; background: #eee; border-bottom: 1px solid #ccc; }
nav form { display: flex; flex: 1; gap: 6px; margin: 0; }
nav input[name=url] { flex: 1; font: inherit; padding: 3px 6px; }
nav a, nav span { text-decoration: none; padding: 2px 8px; }
nav span { color: #aaa; }
.about { padding: 3px 8px; font-size: 12px; color: #444; background: #f8f8f8; border-bottom: 1px solid #ddd; }
.about form { display: inline; }
.problem { padding: 1em; color: #900; }
iframe { flex: 1; border: 0; width: 100%; }
"""


def render(viewer: Viewer, entry: Entry | None, back: int | None, forward: int | None) -> str:
    """The viewer's page at ``entry`` (None: nothing fetched yet)."""
    url = entry.url if entry is not None else ""
    number = str(entry.number) if entry is not None else ""
    controls = [
        _step(viewer, back, "&larr;", "back"),
        _step(viewer, forward, "&rarr;", "forward"),
        f'<a id="history" href="{viewer.at("history")}">history</a>',
        f'<form action="{viewer.at("go")}" method="get">'
        f'<input type="hidden" name="from" value="{number}">'
        f'<input name="url" value="{escape(url)}" placeholder="https://..." autofocus '
        'aria-label="address" spellcheck="false"><button type="submit">Go</button></form>',
    ]
    body = f"<nav>{''.join(controls)}</nav>"
    if entry is None:
        body += f'<div class="about">Pages are fetched by {escape(viewer.describe or "Browser")}.</div>'
    elif entry.error:
        body += f'<div class="problem" id="problem">{escape(entry.error)}</div>'
    elif entry.copy is None:
        again = viewer.at("go?" + _query(number, entry.url))
        body += (
            '<div class="problem">This page is no longer held in memory: '
            f'<a href="{again}">fetch it again</a>.</div>'
        )
    else:
        body += _about(viewer, entry) + (
            f'<iframe id="page" title="{escape(entry.url)}" '
            f'src="{viewer.at(f"page/{number}/{entry.copy.main}")}" '
            f'sandbox="{SANDBOX}" referrerpolicy="no-referrer"></iframe>'
        )
    title = escape(f"{url} (Bento viewer)" if url else "Bento viewer")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="referrer" content="no-referrer"><style>{_STYLE}</style></head>'
        f"<body>{body}</body></html>"
    )


def history(viewer: Viewer, entries: list[dict[str, Any]]) -> str:
    """This run's pages, newest first; each leads to its entry (shown again from memory)."""
    rows = "".join(
        '<li><a href="{}">{}</a>{}</li>'.format(
            viewer.at(f"view/{entry['number']}"),
            escape(entry["url"]),
            f" (not fetched: {escape(entry['error'])})" if entry["error"] else "",
        )
        for entry in reversed(entries)
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>History (Bento viewer)</title></head>'
        f'<body><p><a href="{viewer.at("")}">back to the viewer</a>. This history is held in memory '
        "only and ends with the viewer.</p>"
        f'<ol id="pages">{rows or "<li>nothing yet</li>"}</ol></body></html>'
    )


def problem(message: str, back: str | None = None) -> str:
    link = f' <a id="back" href="{escape(back)}">Back to the page</a>.' if back else ""
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Bento viewer</title></head>'
        f'<body><p class="problem" id="problem">{escape(message)}{link}</p></body></html>'
    )


def _step(viewer: Viewer, number: int | None, arrow: str, name: str) -> str:
    if number is None:
        return f'<span aria-label="{name}">{arrow}</span>'
    return f'<a id="{name}" href="{viewer.at(f"view/{number}")}" aria-label="{name}">{arrow}</a>'


def _about(viewer: Viewer, entry: Entry) -> str:
    figures = entry.figures
    host = (urlsplit(entry.url).hostname or "").lower()
    # Only the names are shown: a value is a secret of the user's (a log-in), kept in memory only.
    allowed = ", ".join(viewer.cookies.get(host, {})) or "none"
    size = (
        f"{figures.get('archive_bytes', 0):,} bytes of page + {figures.get('padding_bytes', 0):,} of padding"
        if figures
        else ""
    )
    return (
        f'<div class="about">Fetched by {escape(viewer.describe or "Browser")}: {size}. '
        f'<form method="post" action="{viewer.at("cookies")}">'
        f'<input type="hidden" name="host" value="{escape(host)}">'
        f'<input type="hidden" name="back" value="{entry.number}">'
        f"Cookies allowed for {escape(host)}: {escape(allowed)}. "
        '<input name="cookies" placeholder="NAME=VALUE; ... (empty: none)" size="30" aria-label="cookies">'
        '<button type="submit">allow</button></form></div>'
    )


def _query(number: str, url: str) -> str:
    return urlencode({"from": number, "url": url})
