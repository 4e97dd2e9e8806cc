"""Paths a user types on the command line are relative to the user's working directory.

Commands that start a pipeline (`sluice batch`, `sluice stream`, `sluice drift --retrain`)
run it at the repository root, so they make every such path absolute first, here, before
the subprocess starts. ``SLUICE_CONFIG`` is a path the user gave too: the child gets it
absolute. A path that does not exist is passed on as such; the pipeline's loader then fails
naming it (only the default platform config may be absent).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["child_env", "user_path"]


def user_path(path: str | Path) -> str:
    """``path`` made absolute against the working directory; a URI (``s3://...``) as is."""
    text = str(path)
    return text if "://" in text else str(Path(text).expanduser().absolute())


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a subprocess run elsewhere: ``SLUICE_CONFIG`` made absolute."""
    env = dict(os.environ if environ is None else environ)
    if env.get("SLUICE_CONFIG"):
        env["SLUICE_CONFIG"] = user_path(env["SLUICE_CONFIG"])
    return env
