"""The corpus's shape: sites, their host names and addresses, and each page's resources.

Everything is drawn from one seed, so a corpus is the same on every machine and every
run; the bytes themselves are made on demand (``content``), never stored.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bento.testnet.corpus import stats

TLD = "test"  # reserved for testing (RFC 6761): these names can never be real ones

# Third parties shared by many sites, as on the web: a script CDN, a font service, an
# analytics host, an ad network and a video host (whose players come as frames).
THIRD_PARTIES = {
    "js": "cdn.shared-cdn.test",
    "font": "fonts.typeface.test",
    "beacon": "stats.metrics.test",
    "ad": "ads.adnet.test",
    "frame": "player.embed.test",
}


@dataclass
class Resource:
    """One URL of a site: where it is, what it is, how large, and what it references."""

    host: str
    path: str
    kind: str  # html, css, js, image, font, frame (an html page in an iframe), data
    size: int  # target length in bytes (text grows past it only to fit its references)
    links: list[Resource] = field(default_factory=list)  # references the parser can see
    srcset: Resource | None = None  # images: the 2x variant, named only in srcset
    scripted: list[Resource] = field(default_factory=list)  # js: URLs only a script makes
    imports: list[Resource] = field(default_factory=list)  # css: @import-ed sheets


@dataclass
class Site:
    index: int
    name: str  # s001
    page: Resource  # the front page
    resources: list[Resource]  # the page included

    @property
    def hosts(self) -> list[str]:
        return sorted({r.host for r in self.resources})

    @property
    def total_bytes(self) -> int:
        return sum(r.size for r in self.resources)

    def url(self, port: int) -> str:
        return f"http://{self.page.host}{_port(port)}/"


class Corpus:
    """``Corpus(seed=0, sites=100)``: the sites, and the addresses of every host name."""

    def __init__(self, *, seed: int = 0, sites: int = 100) -> None:
        if not 1 <= sites <= 999:
            raise ValueError("a corpus has 1 to 999 sites")
        self.seed = seed
        self.sites = [_site(seed, i) for i in range(sites)]
        self.by_url = {(r.host, r.path): r for s in self.sites for r in s.resources}
        # Third parties first, so their addresses do not depend on the number of sites.
        names = list(THIRD_PARTIES.values()) + sorted(
            {h for s in self.sites for h in s.hosts} - set(THIRD_PARTIES.values())
        )
        self.addresses = {name: f"127.20.{k // 250}.{k % 250 + 1}" for k, name in enumerate(names)}


def _port(port: int) -> str:
    return "" if port == 80 else f":{port}"


def url(resource: Resource, port: int) -> str:
    return f"http://{resource.host}{_port(port)}{resource.path}"


def _site(seed: int, index: int) -> Site:
    rng = random.Random(f"bento-corpus:{seed}:{index}")
    name = f"s{index + 1:03d}"
    www, static, img = (f"{h}.{name}.{TLD}" for h in ("www", "static", "img"))
    total, count = stats.draw_page(rng)

    def third(kind: str) -> str:
        return THIRD_PARTIES[kind]

    page = Resource(www, "/", "html", 0)
    made: list[Resource] = [page]

    def new(host: str, stem: str, ext: str, kind: str) -> Resource:
        base = f"/{name}" if host in THIRD_PARTIES.values() else ""
        resource = Resource(host, f"{base}/{stem}{len(made)}.{ext}", kind, 0)
        made.append(resource)
        return resource

    budget = count - 1  # requests left after the page's own
    # Structure every page of some size has: a frame, an @import, and script-made requests.
    main_css = new(static, "css/main", "css", "css")
    page.links.append(main_css)
    budget -= 1
    if budget >= 6:
        imported = new(static, "css/extra", "css", "css")
        main_css.imports.append(imported)
        budget -= 1
    if budget >= 10:
        frame = new(third("frame" if rng.random() < 0.5 else "ad"), "embed", "html", "frame")
        frame.links.append(new(frame.host, "poster", "png", "image"))
        page.links.append(frame)
        budget -= 2
    scripted = max(1, budget // 15) if budget >= 3 else 0
    loader = new(static, "js/app", "js", "js")
    page.links.append(loader)
    budget -= 1
    for _ in range(scripted):  # named by no markup: only a script running asks for them
        if rng.random() < 0.5:
            loader.scripted.append(new(static, "api/data", "json", "data"))
        else:
            loader.scripted.append(new(third("beacon"), "pixel", "png", "image"))
    # The rest by the published request shares of each type.
    kinds = ["image", "js", "font", "css"]
    weights = [stats.REQUEST_SHARES[k] for k in kinds]
    while len(made) < count:
        kind = rng.choices(kinds, weights)[0]
        if kind == "image":
            image = new(img, "img/photo", "png", "image")
            if rng.random() < 0.25 and len(made) < count:  # a srcset with a 2x variant
                image.srcset = new(img, "img/photo-2x", "png", "image")
            (page if rng.random() < 0.8 else main_css).links.append(image)
        elif kind == "js":
            page.links.append(new(third("js") if rng.random() < 0.4 else static, "js/lib", "js", "js"))
        elif kind == "font":
            host = third("font") if rng.random() < 0.5 else static
            main_css.links.append(new(host, "font", "woff2", "font"))
        else:
            page.links.append(new(static, "css/part", "css", "css"))
    _sizes(rng, made, total)
    return Site(index, name, page, made)


def _sizes(rng: random.Random, resources: list[Resource], total: int) -> None:
    """Split ``total`` bytes over the resources by the published byte shares of each type."""
    share_of = {"frame": "html", "data": "js"}
    by_kind: dict[str, list[Resource]] = {}
    for r in resources:
        by_kind.setdefault(share_of.get(r.kind, r.kind), []).append(r)
    shares = {k: stats.BYTE_SHARES[k] for k in by_kind}
    whole = sum(shares.values())
    for kind, members in by_kind.items():
        budget = total * shares[kind] / whole
        weights = [rng.expovariate(1.0) for _ in members]
        for r, w in zip(members, weights, strict=True):
            r.size = max(256, int(budget * w / sum(weights)))
