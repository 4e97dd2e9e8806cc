"""Lineage of a model version: which data, contract, code and libraries produced it.

`ModelMeta` already holds the training data's fingerprint, the feature spec hash and
the training config (seed included); `Lineage` adds the rest, so for any score one can
say which rows (count and event-time range), which contract (a digest of its parsed
form and of its suite), which code (git commit and whether the tree was dirty) and
which library versions made the model that produced it.

    lineage = training_lineage(table, contract, source="generated: rows=50000 seed=7")
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from sluice.config import REPO_ROOT

if TYPE_CHECKING:
    from sluice.contract import Contract

__all__ = ["LIBRARIES", "Lineage", "code_version", "contract_digest", "training_lineage"]

LIBRARIES = ("sluice", "torch", "onnxruntime", "onnx", "numpy", "pyarrow", "lightgbm",
             "onnxmltools", "scikit-learn", "fairlearn")  # fmt: skip
"""Distributions whose versions a registration records (those installed)."""


class Lineage(BaseModel):
    """What produced a version, beyond ModelMeta's fingerprint, spec hash and train params."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_source: str = Field(description="Where the rows came from (a file, or generated).")
    data_rows: int = Field(ge=0, description="Rows the fingerprint covers (train + holdout).")
    data_start: datetime | None = Field(description="Earliest event time in the rows.")
    data_end: datetime | None = Field(description="Latest event time in the rows.")
    contract_digest: str = Field(description="contract_digest(): its parsed form and suite.")
    code_commit: str | None = Field(description="git commit of the code; null outside git.")
    code_dirty: bool | None = Field(description="Uncommitted changes in the work tree.")
    python: str
    libraries: dict[str, str] = Field(description="Distribution -> version, of LIBRARIES.")


def contract_digest(contract: Contract) -> str:
    """``sha256:`` of the contract's parsed form and its suite file's bytes: comments and
    key order do not change it; a changed rule, threshold or expectation does."""
    canon = json.dumps(contract.model_dump(mode="json"), sort_keys=True).encode()
    digest = hashlib.sha256(canon)
    digest.update(contract.resolved_suite_path.read_bytes())
    return "sha256:" + digest.hexdigest()


def code_version() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository the code runs from; (None, None) without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                                check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def _libraries() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def training_lineage(table: pa.Table, contract: Contract, *, source: str) -> Lineage:
    """The lineage of a model trained on `table` (all its rows: train and holdout)."""
    times = table[contract.event_time_column]
    bounds = pc.min_max(times) if table.num_rows else None
    commit, dirty = code_version()
    return Lineage(
        data_source=source,
        data_rows=table.num_rows,
        data_start=None if bounds is None else bounds["min"].as_py(),
        data_end=None if bounds is None else bounds["max"].as_py(),
        contract_digest=contract_digest(contract),
        code_commit=commit,
        code_dirty=dirty,
        python=platform.python_version(),
        libraries=_libraries(),
    )
