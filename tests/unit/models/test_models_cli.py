from __future__ import annotations

import pytest
from model_factories import make_meta, make_model
from typer.testing import CliRunner

from sluice.cli import app
from sluice.contract import load_contract
from sluice.models import ModelRegistry, save_artifact

runner = CliRunner()
FRAUD_SPEC = load_contract("fraud").features.spec_hash()


def _register(tmp_path, root: str, i: int, spec_hash: str = FRAUD_SPEC) -> None:
    meta = make_meta(auc=0.8 + i / 10, spec_hash=spec_hash)
    path = save_artifact(tmp_path / f"artifact{i}", make_model(i), meta)
    result = runner.invoke(app, ["models", "register", "fraud", path, "--registry", root])
    assert result.exit_code == 0, result.output
    assert f"registered fraud/{i + 1}" in result.output


@pytest.mark.parametrize(
    "command", [[], ["list"], ["register"], ["promote"], ["rollback"], ["show"]]
)
def test_help(command):
    result = runner.invoke(app, ["models", *command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_register_list_promote_rollback_round_trip(tmp_path):
    root = str(tmp_path / "registry")
    opts = ["--registry", root]
    for i in range(2):
        _register(tmp_path, root, i)

    # Registered by hand, without a labelled holdout: no gate report, so the fraud
    # contract's gate refuses them as champion until someone overrides it, saying why.
    result = runner.invoke(app, ["models", "promote", "fraud", "1", *opts])
    assert result.exit_code == 1
    assert "fraud/1 may not become champion" in result.output
    assert "no gate report" in result.output
    assert "champion" not in ModelRegistry(root).manifest("fraud").aliases
    force = ["--force", "--reason", "judged offline by the risk team"]
    result = runner.invoke(app, ["models", "promote", "fraud", "1", *force, *opts])
    assert result.exit_code == 0, result.output
    assert "fraud@champion: - -> 1" in result.output
    assert "forced past 1 failed gate check(s)" in result.output
    result = runner.invoke(app, ["models", "promote", "fraud", "2", *force, *opts])
    assert "fraud@champion: 1 -> 2" in result.output
    assert ModelRegistry(root).resolve("fraud@champion") == ("fraud", 2)

    result = runner.invoke(app, ["models", "list", *opts])
    assert result.exit_code == 0, result.output
    header, _, row = result.output.splitlines()[:3]
    assert header.split() == ["MODEL", "VERSIONS", "LATEST", "ALIASES"]
    assert row.split() == ["fraud", "2", "2", "champion=2"]

    result = runner.invoke(app, ["models", "list", "fraud", *opts])
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["VERSION", "REGISTERED", "(UTC)", "CONTRACT"]
    assert lines[3].split()[-2:] == ["0.9", "champion"]

    result = runner.invoke(app, ["models", "rollback", "fraud", *opts])
    assert result.exit_code == 0, result.output
    assert "fraud@champion: 2 -> 1" in result.output
    assert ModelRegistry(root).resolve("fraud@champion") == ("fraud", 1)

    result = runner.invoke(app, ["models", "show", "fraud@champion", *opts])
    assert result.exit_code == 0, result.output
    assert "fraud/1" in result.output and "amount_z" in result.output
    result = runner.invoke(app, ["models", "show", "fraud", *opts])
    assert "rollback" in result.output and "champion=1" in result.output
    assert "forced: judged offline by the risk team" in result.output
    assert "overrode: no gate report" in result.output


def test_errors_are_one_line_and_exit_1(tmp_path):
    opts = ["--registry", str(tmp_path / "empty")]
    result = runner.invoke(app, ["models", "rollback", "fraud", *opts])
    assert result.exit_code == 1
    assert "error: model 'fraud' is not in the registry" in result.output
    result = runner.invoke(app, ["models", "register", "fraud", str(tmp_path / "nope"), *opts])
    assert result.exit_code == 1 and "no such model file" in result.output
    result = runner.invoke(app, ["models", "list", *opts])
    assert result.exit_code == 0 and "no models" in result.output


def test_promote_and_rollback_refuse_a_version_of_another_feature_spec(tmp_path):
    root = str(tmp_path / "registry")
    opts = ["--registry", root]
    _register(tmp_path, root, 0, spec_hash="ffffffffffffffff")  # trained on another spec
    _register(tmp_path, root, 1)
    result = runner.invoke(app, ["models", "promote", "fraud", "1", *opts])
    assert result.exit_code == 1
    assert (f"error: model fraud/1 was trained on feature spec ffffffffffffffff, but contract "
            f"'fraud' declares spec {FRAUD_SPEC}") in result.output  # fmt: skip
    assert "champion" not in ModelRegistry(root).manifest("fraud").aliases

    # the challenger path (no version named) is checked the same way
    ModelRegistry(root).promote("fraud", 1, alias="challenger")
    result = runner.invoke(app, ["models", "promote", "fraud", *opts])
    assert result.exit_code == 1 and "fraud/1 was trained on feature spec ffff" in result.output

    # a rollback onto it is refused too, and the alias and its history stay
    ModelRegistry(root).promote("fraud", 1)  # the registry alone does not know the contract
    forced = ["--force", "--reason", "no holdout for the factory models"]
    assert runner.invoke(app, ["models", "promote", "fraud", "2", *forced, *opts]).exit_code == 0
    result = runner.invoke(app, ["models", "rollback", "fraud", *opts])
    assert result.exit_code == 1 and "fraud/1 was trained on feature spec ffff" in result.output
    manifest = ModelRegistry(root).manifest("fraud")
    assert manifest.aliases["champion"] == 2 and manifest.alias_history["champion"] == [1]

    # register --alias checks the same way: the version stays registered, the alias unmoved
    meta = make_meta(spec_hash="eeeeeeeeeeeeeeee")
    path = save_artifact(tmp_path / "artifact-e", make_model(5), meta)
    result = runner.invoke(app, ["models", "register", "fraud", path, "--alias", "champion", *opts])
    assert result.exit_code == 1 and "registered fraud/3" in result.output
    assert "fraud/3 was trained on feature spec eeee" in result.output
    assert ModelRegistry(root).manifest("fraud").aliases["champion"] == 2

    # --contract names the contract to check against instead of the registered one
    result = runner.invoke(app, ["models", "promote", "fraud", "2", "--contract", "nope", *opts])
    assert result.exit_code == 1 and "nope" in result.output
