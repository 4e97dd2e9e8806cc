"""What `sluice models show` prints: a model's alias history, or one version's model card.

The card: identity and metrics, the score output and architecture, the training data's
fingerprint and train params, the lineage (rows and time range, contract digest, code,
libraries), the promotion gate's report (each check, the slices table) and the training
reference of every feature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice._text import figure, text_table

if TYPE_CHECKING:
    from sluice.models import Manifest, ModelMeta, VersionInfo

__all__ = ["aliases_text", "model_card", "model_history", "num"]


def aliases_text(aliases: dict[str, int]) -> str:
    return ", ".join(f"{a}={v}" for a, v in sorted(aliases.items())) or "-"


def num(value: float | None) -> str:
    return figure(value, ".4g")


def model_history(manifest: Manifest) -> str:
    """Aliases, their history, and every alias move with who forced it and why."""
    lines = [f"model      {manifest.name}  ({len(manifest.versions)} versions)",
             f"aliases    {aliases_text(manifest.aliases)}"]  # fmt: skip
    for alias, history in sorted(manifest.alias_history.items()):
        lines.append(f"history    {alias}: {' -> '.join(map(str, history)) or '-'}")
    if manifest.events:
        rows = [
            (e.at.strftime("%Y-%m-%d %H:%M:%S"), e.action, e.alias,
             "-" if e.previous is None else e.previous, "-" if e.version is None else e.version,
             e.actor or "-", "-" if e.reason is None else f"forced: {e.reason}")
            for e in manifest.events
        ]  # fmt: skip
        lines += ["", text_table(("AT (UTC)", "ACTION", "ALIAS", "FROM", "TO", "BY", "REASON"),
                                 rows)]  # fmt: skip
        lines += [f"  {e.at:%Y-%m-%d %H:%M:%S} overrode: {check}"
                  for e in manifest.events for check in e.overridden]  # fmt: skip
    return "\n".join(lines)


def _lineage(meta: ModelMeta) -> list[str]:
    lin = meta.lineage
    if lin is None:
        return ["lineage       not recorded (registered by hand from an artifact)"]
    code = "-" if lin.code_commit is None else lin.code_commit + (" (dirty)" if lin.code_dirty
                                                                  else "")  # fmt: skip
    span = "-" if lin.data_start is None else (f"{lin.data_start:%Y-%m-%d %H:%M} .. "
                                               f"{lin.data_end:%Y-%m-%d %H:%M} UTC")  # fmt: skip
    libs = ", ".join(f"{k}={v}" for k, v in sorted(lin.libraries.items()))
    return [
        f"data source   {lin.data_source}",
        f"data rows     {lin.data_rows}  event time {span}",
        f"contract sha  {lin.contract_digest}",
        f"code          {code}",
        f"libraries     python={lin.python}, {libs}",
    ]


def model_card(info: VersionInfo) -> str:
    from sluice.gate import format_report

    meta, rec = info.meta, info.record
    trust = "trusted source (may run code when loaded)" if meta.trusted else "untrusted-safe"
    out = meta.output
    column = "" if out.column is None else f", column {out.column}"
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(meta.metrics.items())) or "-"
    lines = [
        f"version       {info.name}/{rec.version}  aliases: {','.join(info.aliases) or '-'}",
        f"registered    {rec.registered_at.isoformat()}",
        f"contract      {meta.contract}",
        f"metrics       {metrics}",
        f"format        {meta.format}  {trust}",
        f"score output  #{out.index}{column}, link {out.link}",
        f"architecture  {', '.join(f'{k}={v}' for k, v in meta.architecture.items()) or '-'}",
        f"feature spec  {meta.feature_spec_hash}",
        f"training data {meta.data_fingerprint}",
        f"model file    {rec.model_sha256}",
    ]
    if meta.train_params:
        params = ", ".join(f"{k}={v}" for k, v in sorted(meta.train_params.items()))
        lines.append(f"train params  {params}")
    lines += _lineage(meta)
    lines.append("")
    lines.append("gate          no report (registered without a labelled holdout)"
                 if meta.gate is None else format_report(meta.gate))  # fmt: skip
    rows = [
        (n, r.count, num(r.mean), num(r.std), num(r.min), num(r.max))
        for n, r in ((n, meta.reference.features[n]) for n in meta.feature_names)
    ]
    lines += ["", text_table(("FEATURE", "COUNT", "MEAN", "STD", "MIN", "MAX"), rows)]
    return "\n".join(lines)
