"""The `sluice` command line. Each command group lives in its own module."""

from __future__ import annotations

import typer

from sluice.cli import alerts, drift, local, models, schema, stream
from sluice.cli import serve as serve_cli

app = typer.Typer(
    name="sluice",
    help="Sluice: batch, stream and online ML scoring on Ray, with results in Cassandra.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(alerts.app, name="alerts")
app.add_typer(local.app, name="local")
app.add_typer(models.app, name="models")
app.add_typer(schema.app, name="schema")
app.add_typer(serve_cli.app, name="serve")
stream.register(app)  # `sluice stream`, `sluice produce`
drift.register(app)  # `sluice drift`


@app.command()
def batch(
    job: str = typer.Option(..., "--job", help="Job file, e.g. configs/jobs/fraud_batch.yaml"),
    config: str | None = typer.Option(None, "--config", help="Platform config file."),
) -> None:
    """Run a batch scoring job on the local (or configured) Ray: `pipelines.batch_score`.

    Relative paths are relative to the working directory; the job runs at the repo root.
    """
    import subprocess
    import sys

    from sluice.cli._paths import child_env, user_path
    from sluice.config import REPO_ROOT

    cmd = [sys.executable, "-m", "pipelines.batch_score", "--job", user_path(job)]
    cmd += ["--config", user_path(config)] if config else []
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=child_env(), check=False)
    raise typer.Exit(done.returncode)


__all__ = ["app"]
