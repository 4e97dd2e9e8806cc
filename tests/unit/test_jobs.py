from pathlib import Path

import pytest

from sluice.errors import ConfigError
from sluice.jobs import InputFormat, load_job

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_repo_batch_job_loads():
    job = load_job(REPO / "configs" / "jobs" / "fraud_batch.yaml")
    assert job.contract == "fraud"
    assert job.input.format is InputFormat.PARQUET
    assert job.actors.min_actors <= job.actors.max_actors
    assert job.num_gpus_per_actor == 0


def test_relative_job_path_is_relative_to_the_working_directory(monkeypatch, tmp_path):
    (tmp_path / "mine.yaml").write_text((REPO / "configs/jobs/fraud_batch.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert load_job("mine.yaml").name == "fraud_batch"


def test_relative_job_path_is_not_looked_up_in_the_repo(monkeypatch, tmp_path):
    # The repo has configs/jobs/fraud_batch.yaml, but this user's directory has not: an
    # error naming the path looked at, not the repo's file in its place.
    monkeypatch.chdir(tmp_path)
    expected = f"job file {tmp_path / 'configs/jobs/fraud_batch.yaml'} does not exist"
    with pytest.raises(ConfigError, match=expected):
        load_job("configs/jobs/fraud_batch.yaml")


def test_missing_job_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_job("configs/jobs/nope.yaml")


def test_missing_input_is_named(tmp_path):
    path = write(tmp_path, "name: j\ncontract: fraud\n")
    with pytest.raises(ConfigError, match=r"input: got .*; expected Field required"):
        load_job(path)


def test_unknown_key_and_bad_format(tmp_path):
    path = write(tmp_path, "name: j\ncontract: fraud\ninput: {paths: [a], format: orc}\nbatch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_job(path)
    assert "input.format: got 'orc'" in str(err.value)
    assert "batch: unknown key" in str(err.value)


def test_actor_pool_bounds(tmp_path):
    path = write(
        tmp_path,
        "name: j\ncontract: fraud\ninput: {paths: [a]}\nactors: {min_actors: 3, max_actors: 2}\n",
    )
    with pytest.raises(ConfigError, match=r"min_actors \(3\) must not exceed max_actors \(2\)"):
        load_job(path)


def test_failing_on_table_level_expectations_is_a_job_option(tmp_path):
    repo_job = load_job(REPO / "configs" / "jobs" / "fraud_batch.yaml")
    assert repo_job.fail_on_failed_expectations is False
    path = write(tmp_path, "name: j\ncontract: fraud\ninput: {paths: [a]}\n"
                           "fail_on_failed_expectations: true\n")  # fmt: skip
    assert load_job(path).fail_on_failed_expectations is True
    path = write(tmp_path, "name: j\ncontract: fraud\ninput: {paths: [a]}\n"
                           "fail_on_failed_expectations: sometimes\n")  # fmt: skip
    with pytest.raises(ConfigError, match="fail_on_failed_expectations"):
        load_job(path)
