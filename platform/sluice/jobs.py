"""Job definitions (`configs/jobs/*.yaml`), parsed once at a job's entry point.

A batch job names its input files, the contract, and how Ray Data runs the scorer; a stream
job names its Kafka topic, consumer group, consumer actors and micro-batch limits.
Errors name the file, the field and the bad value, before any data is read or written.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sluice.config import format_validation_error, read_yaml_mapping
from sluice.errors import ConfigError

__all__ = [
    "ActorPool",
    "BatchJob",
    "ConsumerScaling",
    "InputFormat",
    "InputSpec",
    "StreamJob",
    "load_job",
    "load_stream_job",
]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_Job = TypeVar("_Job", bound=Frozen)


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
    model: str | None = Field(
        None, description="Model version or alias to score with (fraud/3, fraud@challenger) "
        "instead of the contract's; resolved once when the job starts.",
    )
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
    fail_on_failed_expectations: bool = Field(
        False,
        description="Fail the job, before any row is scored, when an expectation of the "
        "suite fails over the whole input (uniqueness, row counts, a `mostly` threshold; "
        "GX's verdict). Either way the results are in the job summary and the metrics.",
    )


def load_job(path: Path | str) -> BatchJob:
    """Parse a batch job file; ConfigError naming the file and field on any problem."""
    return _parse_job(path, BatchJob)


# -- stream jobs (`configs/jobs/*_stream.yaml`) ------------------------------------------------
class ConsumerScaling(Frozen):
    """Consumer count that follows the group's Kafka lag, within ``[min, max]``.

    Every ``check_interval_s`` the driver wants ``ceil(lag / lag_per_consumer)`` consumers
    (clamped; never more than the topic's partitions). It adds them once the want has
    stayed above the count for ``scale_up_after_s``, and stops one (its batch in flight
    finished and committed, then it leaves the group) once the want has stayed below the
    count for ``scale_down_after_s``.
    """

    min_consumers: int = Field(1, ge=1, le=256)
    max_consumers: int = Field(ge=1, le=256)
    lag_per_consumer: int = Field(
        5000, ge=1, description="Messages of lag one consumer is expected to carry."
    )
    check_interval_s: float = Field(2.0, gt=0, le=300, description="How often lag is read.")
    scale_up_after_s: float = Field(
        0.0, ge=0, le=3600, description="How long the want must stay above the count."
    )
    scale_down_after_s: float = Field(
        60.0, ge=0, le=86_400, description="How long the want must stay below the count."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ConsumerScaling:
        if self.max_consumers < self.min_consumers:
            raise ValueError(f"max_consumers {self.max_consumers} is below min_consumers "
                             f"{self.min_consumers}")  # fmt: skip
        return self


class StreamJob(Frozen):
    """A stream job: one Kafka topic scored continuously by consumer actors.

    Each consumer polls micro-batches of what has arrived (up to ``max_batch_messages``;
    it waits ``max_batch_wait_ms`` at most for a first message), writes every output,
    waits for the writes, then commits.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    contract: str = Field(description="Contract name (configs/contracts/<name>.yaml) or path.")
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$", description="Kafka topic to score.")
    group_id: str | None = Field(
        None, min_length=1, max_length=255,
        description="Kafka consumer group; default sluice-<name>.",
    )  # fmt: skip
    consumers: int = Field(
        1, ge=1, le=256,
        description="Consumer actors; capped at the topic's partition count (one per partition "
        "at most: an extra one would get no partition).",
    )  # fmt: skip
    autoscale: ConsumerScaling | None = Field(
        None, description="Let the consumer count follow Kafka lag (``consumers`` is then the "
        "count it starts with, clamped into the range); without it the count is fixed.",
    )  # fmt: skip
    max_batch_messages: int = Field(2000, gt=0, le=100_000, description="Messages per micro-batch.")
    max_batch_wait_ms: int = Field(
        500, gt=0, le=60_000,
        description="Longest a consumer waits for a first message before it returns to "
        "commit and report lag; a batch never waits for more messages once one is here.",
    )  # fmt: skip
    gx_min_rows: int = Field(
        5000, gt=0,
        description="Micro-batches of at least this many events are validated by Great "
        "Expectations itself (its fixed cost per call is amortized there); smaller ones by "
        "the compiled engine (same verdicts, proven by the parity property test).",
    )  # fmt: skip
    num_cpus_per_consumer: float = Field(1.0, gt=0, le=64, description="CPUs per consumer actor.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a group without committed offsets starts."
    )
    session_timeout_ms: int = Field(
        10_000, ge=1000, le=300_000,
        description="Kafka group session timeout: how long a crashed consumer keeps its "
        "partitions before the group hands them to another.",
    )  # fmt: skip
    max_poll_interval_ms: int = Field(
        300_000, ge=10_000, le=3_600_000,
        description="Longest one micro-batch may take before the group evicts its consumer.",
    )  # fmt: skip
    max_consumer_restarts: int = Field(
        10, ge=0, le=10_000,
        description="Consumer actors the driver replaces after a crash within any "
        "restart_window_s before it gives up (older restarts no longer count).",
    )  # fmt: skip
    restart_window_s: float = Field(
        600.0, gt=0, le=86_400,
        description="The sliding window max_consumer_restarts is counted over.",
    )  # fmt: skip
    store_outage_max_s: float = Field(
        180.0, gt=0, le=3600,
        description="How long a consumer waits for Cassandra to come back, retrying the batch "
        "in flight with backoff (nothing is committed meanwhile), before it fails. It does "
        "not poll Kafka while it waits, so it must stay below max_poll_interval_ms.",
    )  # fmt: skip
    max_message_bytes: int = Field(
        65_536, ge=64, le=65_536,
        description="Largest message value decoded; a larger one is quarantined unparsed. "
        "Also the most bytes of a message's key and value a quarantine row keeps (as JSON "
        "text, up to 6 characters a byte, and base64): at most 64 KiB, so that row stays "
        "under the 1 MiB every quarantine row is bounded to, and whole.",
    )  # fmt: skip
    max_unknown_fields: int = Field(
        64, ge=0, le=10_000,
        description="Fields outside the contract a message may carry (they are dropped); a "
        "message with more is quarantined as too wide.",
    )  # fmt: skip

    @property
    def group(self) -> str:
        return self.group_id or f"sluice-{self.name}"

    @model_validator(mode="after")
    def _poll_interval_over_waits(self) -> StreamJob:
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ValueError(
                f"max_poll_interval_ms ({self.max_poll_interval_ms}) must not be below "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        if self.store_outage_max_s * 1000 >= self.max_poll_interval_ms:
            raise ValueError(
                f"store_outage_max_s ({self.store_outage_max_s:g}) must stay below "
                f"max_poll_interval_ms ({self.max_poll_interval_ms} ms): a consumer waiting "
                "for Cassandra does not poll, and the group would evict it"
            )
        return self


def load_stream_job(path: Path | str) -> StreamJob:
    """Parse a stream job file; ConfigError naming the file and field on any problem."""
    return _parse_job(path, StreamJob)


def _parse_job(path: Path | str, model: type[_Job]) -> _Job:
    # A job path is the user's: relative to the working directory, like any command-line
    # path (the CLI makes it absolute before it starts the pipeline at the repo root).
    path = Path(path).absolute()
    if not path.is_file():
        raise ConfigError(f"job file {path} does not exist")
    raw = read_yaml_mapping(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc
