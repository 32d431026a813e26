"""Reading a manifest file (TOML or JSON) for ``deploy`` and ``boxes --fits``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bento.errors import BentoError, describe_validation
from bento.protocol.manifest import Manifest


def read_manifest(path: Path, defaults: dict[str, Any]) -> Manifest:
    """A manifest file, TOML or JSON (``name``, ``module``, ``description``, ``[needs]``)."""
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise BentoError(f"cannot read the manifest {path}: {exc}") from None
    data = {**defaults, **data}
    data.setdefault("name", path.stem)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise BentoError(
            f"invalid manifest {path}: {describe_validation(exc)}",
            fix="see the manifest's fields in docs/api.md",
        ) from None
