"""The test corpus: synthetic web sites, generated from a seed, served on loopback.

At least 100 sites whose page weights and request counts follow the HTTP Archive's
published statistics (``stats``), each with several host names of its own and shared
third parties (``model``), made of real markup, style sheets, scripts, images and fonts
(``content``), served by uvicorn and Starlette (``serve``). The testnet's nameserver maps
every host name to its loopback address, so Tor exits and Bento boxes reach them by name.

>>> corpus = Corpus(seed=0, sites=100)
>>> corpus.sites[0].url(8080), corpus.addresses["www.s001.test"]
('http://www.s001.test:8080/', '127.20.0.206')
"""

from bento.testnet.corpus.model import Corpus, Resource, Site

__all__ = ["Corpus", "Resource", "Site"]
