"""Static import scan: what `bento deploy` warns about, and what a box offers of its client."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from bento.cli.deploy import unprovided_imports
from bento.protocol.imports import imports_of, missing
from bento.server.packages import client_dependencies

SOURCE = b"""
import json, os.path
import requests
from urllib3.util import Retry
from . import sibling
from bento.runtime import api
from bento import client
import bento.client.box
try:
    import simplejson
except ImportError:
    simplejson = None
if TYPE_CHECKING:
    import typing_only
def later():
    import lazy_dependency
"""


def test_imports_of_skips_optional_relative_and_type_checking_imports() -> None:
    assert imports_of(SOURCE) == {
        "json", "os", "requests", "urllib3", "bento.runtime", "bento.client", "lazy_dependency",
    }  # fmt: skip
    assert imports_of(b"def broken(:") == set()


def test_missing_counts_the_upload_vendor_wheels_and_the_box(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_bytes(SOURCE)
    (tmp_path / "lazy_dependency.py").write_text("import somewhere_else\n")
    (tmp_path / "vendor" / "requests").mkdir(parents=True)
    (tmp_path / "vendor" / "requests" / "__init__.py").write_text("import charset_normalizer\n")
    with zipfile.ZipFile(tmp_path / "vendor" / "urllib3-2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("urllib3/__init__.py", "")
    assert missing(tmp_path, offered=[]) == {
        "bento.client": ["main.py"],
        "somewhere_else": ["lazy_dependency.py"],  # vendor/ itself is not scanned
    }
    assert missing(tmp_path, offered=["bento", "somewhere_else"]) == {}


def test_deploy_warns_for_files_directories_and_archives(tmp_path: Path) -> None:
    module = tmp_path / "single.py"
    module.write_text("import requests\nfrom bento.runtime import api\n")
    (warning,) = unprovided_imports(module, offered=[])
    assert "'requests'" in warning and "pip install --target vendor requests" in warning
    assert unprovided_imports(module, offered=["requests"]) == []

    archive = tmp_path / "fn.tar.gz"
    data = b"import bento.client\n"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (warning,) = unprovided_imports(archive, offered=["httpx"])
    assert "does not offer" in warning and "'bento'" in warning


def test_the_client_offer_follows_the_clients_imports() -> None:
    needed = client_dependencies()
    assert {"httpx", "pydantic", "cryptography", "stem"} <= set(needed)
    assert not {"starlette", "uvicorn", "pyseccomp"} & set(needed), "server-only packages are not offered"
