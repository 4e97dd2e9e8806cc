from typer.testing import CliRunner

from sluice.cli import app

runner = CliRunner()


def test_top_level_help_lists_command_groups():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "local" in result.output


def test_local_help_lists_up_down_status():
    result = runner.invoke(app, ["local", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("up", "down", "status"):
        assert command in result.output


def test_bad_config_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("kafka:\n  bootstrap_server: x\n")
    result = runner.invoke(app, ["local", "status", "--config", str(bad)])
    assert result.exit_code != 0
    assert "kafka.bootstrap_server" in str(result.exception)
