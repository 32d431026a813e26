"""A function's manifest: its name, the module to load, and what it needs.

The manifest travels with the code at upload. A box admits it only if its ``needs`` fit
the box's node policy (bento.protocol.policy), then enforces those needs in the sandbox.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bento.protocol.policy import Needs

_MODULE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
_IDENTIFIER = re.compile(_MODULE)


class Manifest(BaseModel):
    # defer_build: each schema is built when first used, so a command builds only its own.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: str = Field(min_length=1, max_length=64, description="a name for people; not unique")
    module: str = Field(
        default="main",
        max_length=200,
        description="the module to import: a single uploaded file is always saved as this module",
        json_schema_extra={"pattern": _MODULE},  # checked by the validator, with a clearer message
    )
    description: str = Field(default="", max_length=2000)
    needs: Needs = Field(default_factory=Needs, description="resources and capabilities it asks for")

    @field_validator("module")
    @classmethod
    def _dotted_identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a Python module name")
        return value
