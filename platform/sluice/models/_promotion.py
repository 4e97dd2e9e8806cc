"""What a version must pass before an alias moves to it, and who moved it.

    check_feature_spec("fraud/3", record.feature_spec_hash, contract)   # ConfigError
    overridden = check_gate("fraud/3", meta.gate, contract, force_reason)  # PromotionRefused

Both need the contract, which the registry alone does not know: the CLI and the training
pipeline always pass it (`ModelRegistry.promote(..., contract=...)`).
"""

from __future__ import annotations

import getpass
import socket
from typing import TYPE_CHECKING

from sluice.errors import ConfigError, PromotionRefused
from sluice.gate import GateReport, refusals

if TYPE_CHECKING:
    from sluice.contract import Contract

__all__ = ["check_feature_spec", "check_gate", "who"]


def check_feature_spec(where: str, trained_spec_hash: str, contract: Contract) -> None:
    """Refuse a model version trained on another feature spec than `contract` declares."""
    expected = contract.features.spec_hash()
    if trained_spec_hash != expected:
        raise ConfigError(
            f"model {where} was trained on feature spec {trained_spec_hash}, but contract "
            f"{contract.name!r} declares spec {expected}; retrain the model for this contract "
            "or use a version trained on its spec"
        )


def check_gate(where: str, report: GateReport | None, contract: Contract,
               force_reason: str | None, leader: int | None = None,
               version: int | None = None) -> list[str]:  # fmt: skip
    """The gate checks a champion promotion of `where` (version `version`) overrides ([] when
    it passes, or the contract has no gate). Failing without a `force_reason` raises
    `PromotionRefused` naming each failed check with its figure and threshold.

    `leader` is the champion now: a report whose AUC margin was measured against another
    (a retrain promoted since) no longer says the candidate is within `max_drop` of the
    version it would replace, so it must be judged again."""
    if contract.gate is None:
        return []
    failures = refusals(report, contract.gate.digest(contract.alert_threshold))
    if (report is not None and not failures and contract.gate.auc.max_drop is not None
            and leader is not None and leader not in (report.champion, version)):
        judged = "no champion" if report.champion is None else f"version {report.champion}"
        failures = [f"its AUC margin was measured against {judged}, but version {leader} "
                    "leads now: judge it again (retrain, or sluice models register "
                    "--holdout)"]  # fmt: skip
    if failures and force_reason is None:
        raise PromotionRefused(
            f"{where} may not become champion: it fails the promotion gate of contract "
            f"{contract.name!r}:\n  - " + "\n  - ".join(failures) + "\nretrain it, or "
            "override with --force --reason \"...\" (recorded in the alias history)", failures,
        )  # fmt: skip
    return failures


def who() -> str:
    """user@host of the caller, for the alias history."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
