"""Job definitions (`configs/jobs/*.yaml`), parsed once at a job's entry point.

A batch job names its input files, the contract, and how Ray Data runs the scorer.
Errors name the file, the field and the bad value, before any data is read or written.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sluice.config import REPO_ROOT, format_validation_error
from sluice.errors import ConfigError

__all__ = ["ActorPool", "BatchJob", "InputFormat", "InputSpec", "load_job"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputFormat(StrEnum):
    PARQUET = "parquet"
    CSV = "csv"


class InputSpec(Frozen):
    paths: tuple[str, ...] = Field(
        min_length=1,
        description="Files, directories or globs; local paths (relative to the repo) or any "
        "pyarrow.fs URI (s3://, gs://, hdfs://).",
    )
    format: InputFormat = InputFormat.PARQUET


class ActorPool(Frozen):
    min_actors: int = Field(1, ge=1, description="Scoring actors kept alive.")
    max_actors: int = Field(2, ge=1, description="Scoring actors Ray Data may scale up to.")

    @model_validator(mode="after")
    def _min_le_max(self) -> ActorPool:
        if self.min_actors > self.max_actors:
            raise ValueError(
                f"min_actors ({self.min_actors}) must not exceed max_actors ({self.max_actors})"
            )
        return self


class BatchJob(Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    contract: str = Field(description="Contract name (configs/contracts/<name>.yaml) or path.")
    input: InputSpec
    batch_rows: int = Field(8192, gt=0, le=1_000_000, description="Rows per scoring call.")
    actors: ActorPool = ActorPool()
    num_gpus_per_actor: float = Field(
        0.0, ge=0, le=8, description="GPUs per scoring actor; 0 on CPU-only clusters."
    )
    validation_engine: Literal["gx", "compiled"] = Field(
        "gx", description="gx: Great Expectations itself (batches are large enough to pay it)."
    )
    parquet_copy_dir: str | None = Field(
        None, description="Also write the scored rows as Parquet here (path or URI)."
    )
    summary_path: str = Field(
        ".state/jobs/summary.json", description="Where the job summary JSON is written."
    )


def load_job(path: Path | str) -> BatchJob:
    """Parse a batch job file; ConfigError naming the file and field on any problem."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    if not path.is_file():
        raise ConfigError(f"job file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return BatchJob.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc
