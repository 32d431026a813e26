"""Fetch: download a page at the box's exit with urllib3, a package the function ships.

urllib3 opens its own sockets; inside Bento every connect and name lookup goes through
the box's broker, which allows only what the manifest asks for and the relay's exit
policy accepts. The package is vendored (``vendor/`` is put on ``sys.path``)::

    pip install --target examples/fetch/vendor --no-deps urllib3
    bento deploy examples/fetch --box BOX --manifest examples/fetch/manifest.toml
    bento invoke fetch get '"http://example.com/"' > page.html
"""

import hashlib

import urllib3

from bento.runtime import api


def get(url):
    """Stream the body of ``url`` to the client; return its status, size and SHA-256."""
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=30, read=60))
    response = http.request("GET", url, preload_content=False)
    digest, size = hashlib.sha256(), 0
    for chunk in response.stream(65536):
        api.send(chunk)
        digest.update(chunk)
        size += len(chunk)
    response.release_conn()
    return {"status": response.status, "bytes": size, "sha256": digest.hexdigest(), "via": urllib3.__name__}
