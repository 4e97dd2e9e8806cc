"""The per-model manifest: versions, aliases and alias history, as one JSON document.

Layout of a registry root (any pyarrow filesystem)::

    <root>/<name>/manifest.json          this document (replaced atomically)
    <root>/<name>/.lock                  writer lock (local filesystems)
    <root>/<name>/versions/000001/       model.onnx (or .pt2/.ts), meta.json, registration.json

Versions are append-only; only `aliases`, `alias_history` and `events` change
after a version is registered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sluice.errors import ModelNotFound
from sluice.models._formats import ModelFormat

__all__ = [
    "AliasEvent",
    "Manifest",
    "ModelRef",
    "VersionRecord",
    "check_name",
    "parse_model_ref",
]

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
CHAMPION = "champion"
CHALLENGER = "challenger"


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ModelNotFound(
            f"invalid {what} {value!r}: expected lowercase letters, digits, '_' or '-', "
            "starting with a letter (at most 64 characters)"
        )
    return value


@dataclass(frozen=True)
class ModelRef:
    """`name@alias`, `name/version`, or a bare `name` (meaning `name@champion`)."""

    name: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        return f"{self.name}@{self.alias or CHAMPION}"


def parse_model_ref(ref: str | ModelRef) -> ModelRef:
    """Parse `fraud@champion`, `fraud/3` or `fraud`; errors name the bad reference."""
    if isinstance(ref, ModelRef):
        return ref
    text = ref.strip()
    if "@" in text:
        name, _, alias = text.partition("@")
        return ModelRef(check_name(name, "model name"), alias=check_name(alias, "alias"))
    if "/" in text:
        name, _, version = text.partition("/")
        if not version.isdigit() or int(version) < 1:
            raise ModelNotFound(f"invalid model reference {ref!r}: version must be an integer >= 1")
        return ModelRef(check_name(name, "model name"), version=int(version))
    return ModelRef(check_name(text, "model name"), alias=CHAMPION)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VersionRecord(_Frozen):
    """Summary of one immutable version (the full metadata is in its meta.json)."""

    version: int = Field(..., ge=1)
    registered_at: datetime
    contract: str
    format: ModelFormat = Field(..., description="Artifact format (models/_formats.py).")
    trusted: bool = Field(False, description="Registered as from a trusted source.")
    metrics: dict[str, float]
    feature_spec_hash: str
    data_fingerprint: str
    model_sha256: str = Field(..., description="Checked on every load.")
    meta_sha256: str = Field(..., description="Checked on every load.")


class AliasEvent(_Frozen):
    """One alias move, kept for audit (`sluice models show NAME`)."""

    at: datetime
    action: Literal["promote", "rollback", "set_alias", "clear_alias"]
    alias: str
    version: int | None
    previous: int | None
    actor: str | None = Field(None, description="Who moved it (user@host), when recorded.")
    reason: str | None = Field(None, description="Why, as given with --reason.")
    overridden: tuple[str, ...] = Field(
        (), description="Gate checks the version failed, promoted anyway (--force)."
    )


class Manifest(BaseModel):
    """Mutable only inside the registry's writer lock; always written whole."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[2] = Field(
        2, description="2: versions hold a model file in a format of sluice.models._formats "
        "(1, before: an MLP state_dict, no longer loadable)."
    )
    name: str
    versions: list[VersionRecord] = Field(default_factory=list)
    aliases: dict[str, int] = Field(default_factory=dict)
    alias_history: dict[str, list[int]] = Field(
        default_factory=dict, description="Previous versions of each alias, oldest first."
    )
    events: list[AliasEvent] = Field(default_factory=list)
    pins: dict[str, int] = Field(
        default_factory=dict,
        description="'<alias>@<scope>' -> the version the alias was resolved to once for that "
        "scope (e.g. one Serve deployment generation); see ModelRegistry.pin.",
    )

    def record(self, version: int) -> VersionRecord:
        for rec in self.versions:
            if rec.version == version:
                return rec
        known = ", ".join(str(r.version) for r in self.versions) or "none"
        raise ModelNotFound(f"{self.name}/{version}: no such version (registered: {known})")

    def resolve(self, ref: ModelRef) -> int:
        if ref.version is not None:
            return self.record(ref.version).version
        alias = ref.alias or CHAMPION
        if alias not in self.aliases:
            have = ", ".join(f"{a} -> {v}" for a, v in sorted(self.aliases.items())) or "none"
            raise ModelNotFound(f"{self.name}@{alias}: alias is not set (aliases: {have})")
        return self.aliases[alias]

    def aliases_of(self, version: int) -> list[str]:
        return sorted(a for a, v in self.aliases.items() if v == version)

    @property
    def latest(self) -> int:
        return max((r.version for r in self.versions), default=0)
