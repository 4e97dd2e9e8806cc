"""Model versions side by side on the same live rows: `sluice models compare`.

The prediction log holds every online row the champion (or the canary's challenger)
answered and every row the shadow model scored after the answer, each with its
``model_version`` and ``role``. Rows of one key scored by two versions are a pair; per
version pair this reports the rows compared, the Pearson correlation of their scores,
the share of rows where their decisions agree, the mean |score difference|, and, where
labels are given (a Parquet file of the contract's key and label columns), each
version's AUC on the compared rows. The same figures are written as Prometheus gauges
(``sluice.metrics.COMPARE_GAUGES``) for node_exporter's textfile collector.

    rows = read_log_scores(session, keyspace, contract, since=now - parse_window("1h"))
    pairs = compare_versions(rows, labels=read_key_labels("labels.parquet", contract))
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from sluice._text import figure, text_table
from sluice.contract import Contract
from sluice.drift._read import log_table, scan
from sluice.errors import ConfigError
from sluice.metrics import COMPARE_GAUGES

__all__ = ["LoggedScore", "VersionPair", "compare_versions", "format_pairs", "read_key_labels",
           "read_log_scores", "write_compare_metrics"]


@dataclass(frozen=True)
class LoggedScore:
    key: str
    model_version: str
    role: str  # champion, challenger or shadow (rows logged before roles: champion)
    score: float
    decision: str | None
    logged_at: datetime | None = None


@dataclass(frozen=True)
class VersionPair:
    a: str
    b: str
    rows: int
    correlation: float | None  # None: fewer than 2 rows, or a constant score
    decision_agreement: float | None  # None: no decisions logged
    mean_abs_delta: float
    auc_a: float | None  # None: no labels, or one class only among the compared rows
    auc_b: float | None
    labelled: int


def read_log_scores(session: Any, keyspace: str, contract: Contract, *, since: datetime,
                    splits: int = 16, fetch_size: int = 2000, timeout_s: float = 60.0,
                    retries: int = 2) -> list[LoggedScore]:  # fmt: skip
    """The contract's prediction-log rows logged at or after `since` (a full scan)."""
    rows = scan(session, keyspace, log_table(contract), since, splits=splits,
                fetch_size=fetch_size, timeout_s=timeout_s, retries=retries,
                columns="row_key, model_version, role, score, decision, logged_at")  # fmt: skip
    return [LoggedScore(str(k), str(v), r or "champion", float(s), d, t)
            for k, v, r, s, d, t in rows if k is not None and s is not None]  # fmt: skip


def read_key_labels(path: str | Path, contract: Contract) -> dict[str, int]:
    """key -> label from a Parquet file holding the contract's key and label columns."""
    if contract.label_column is None:
        raise ConfigError(f"contract {contract.name!r} has no label_column: no AUC to compute")
    columns = [contract.key_column, contract.label_column]
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, ValueError, KeyError) as exc:  # pyarrow: missing file or column
        raise ConfigError(f"--labels {path}: cannot read columns {columns}: {exc}") from exc
    keys, labels = table[columns[0]].to_pylist(), table[columns[1]].to_pylist()
    return {str(k): int(y) for k, y in zip(keys, labels, strict=True)
            if k is not None and y is not None}  # fmt: skip


def _auc(y: list[int], s: np.ndarray) -> float | None:
    from sluice.models import roc_auc

    return roc_auc(np.array(y), s) if 0 < sum(y) < len(y) else None


def compare_versions(rows: list[LoggedScore],
                     labels: dict[str, int] | None = None) -> list[VersionPair]:  # fmt: skip
    """Per pair of versions that scored the same keys: see the module docstring. A key
    logged twice by one version (a retried request) counts once, with its latest row."""
    by_key: dict[str, dict[str, LoggedScore]] = {}
    for row in sorted(rows, key=lambda r: (r.logged_at is not None, r.logged_at or 0)):
        by_key.setdefault(row.key, {})[row.model_version] = row
    versions = sorted({r.model_version for r in rows})
    out = []
    for a, b in itertools.combinations(versions, 2):
        both = [(k, v[a], v[b]) for k, v in by_key.items() if a in v and b in v]
        if not both:
            continue
        sa = np.array([x.score for _, x, _ in both])
        sb = np.array([y.score for _, _, y in both])
        corr = (float(np.corrcoef(sa, sb)[0, 1])
                if len(both) > 1 and sa.std() > 0 and sb.std() > 0 else None)  # fmt: skip
        decided = [(x.decision, y.decision) for _, x, y in both
                   if x.decision is not None and y.decision is not None]  # fmt: skip
        agree = sum(x == y for x, y in decided) / len(decided) if decided else None
        known = [i for i, (k, _, _) in enumerate(both) if labels and k in labels]
        y = [labels[both[i][0]] for i in known] if labels else []
        out.append(VersionPair(
            a=a, b=b, rows=len(both), correlation=corr, decision_agreement=agree,
            mean_abs_delta=float(np.abs(sa - sb).mean()),
            auc_a=_auc(y, sa[known]) if known else None,
            auc_b=_auc(y, sb[known]) if known else None, labelled=len(known),
        ))  # fmt: skip
    return out


def format_pairs(rows: list[LoggedScore], pairs: list[VersionPair]) -> str:
    """Rows logged per version and role, then the pairs table (what the command prints)."""
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        counts[(r.model_version, r.role)] = counts.get((r.model_version, r.role), 0) + 1
    lines = [text_table(("VERSION", "ROLE", "ROWS"),
                        [(v, role, n) for (v, role), n in sorted(counts.items())]), ""]  # fmt: skip
    if not pairs:
        lines.append("no key was scored by two versions in the window")
    else:
        lines.append(text_table(
            ("A", "B", "ROWS", "CORRELATION", "DECISIONS AGREE", "MEAN |DELTA|", "AUC A",
             "AUC B", "LABELLED"),
            [(p.a, p.b, p.rows, figure(p.correlation), figure(p.decision_agreement),
              figure(p.mean_abs_delta), figure(p.auc_a), figure(p.auc_b), p.labelled)
             for p in pairs],
        ))  # fmt: skip
    return "\n".join(lines)


def write_compare_metrics(contract: str, pairs: list[VersionPair], path: str | Path) -> Path:
    """The pairs' figures as gauges in `path` (text format; atomic replace of the file)."""
    registry = CollectorRegistry()
    g = {name: Gauge(name, doc, list(labels), registry=registry)
         for name, (doc, labels) in COMPARE_GAUGES.items()}  # fmt: skip
    for p in pairs:
        pair = (contract, p.a, p.b)
        g["sluice_compare_rows"].labels(*pair).set(p.rows)
        g["sluice_compare_mean_abs_score_delta"].labels(*pair).set(p.mean_abs_delta)
        if p.correlation is not None:
            g["sluice_compare_score_correlation"].labels(*pair).set(p.correlation)
        if p.decision_agreement is not None:
            g["sluice_compare_decision_agreement"].labels(*pair).set(p.decision_agreement)
        for version, auc in ((p.a, p.auc_a), (p.b, p.auc_b)):
            if auc is not None:  # on this pair's rows: each pair has its own
                g["sluice_compare_auc"].labels(*pair, version).set(auc)
    g["sluice_compare_last_run_timestamp_seconds"].labels(contract).set(time.time())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path
