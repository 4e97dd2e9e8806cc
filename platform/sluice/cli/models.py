"""`sluice models list | register | promote | rollback | show | compare`: the registry by hand.

`show NAME/VERSION` (or `NAME@ALIAS`) prints the version's model card: metrics, score
output, lineage, the promotion gate's report (each check, the slices table) and the
training reference of every feature. `promote` enforces the contract's gate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from sluice._text import text_table
from sluice.cli._model_card import aliases_text, model_card, model_history, num
from sluice.config import load_platform_config
from sluice.errors import SluiceError

if TYPE_CHECKING:
    from sluice.contract import Contract
    from sluice.models import Manifest, ModelMeta, ModelOutput, ModelRegistry

app = typer.Typer(
    help="Register, inspect, promote and roll back model versions.", no_args_is_help=True
)

T = TypeVar("T")

ConfigOption = typer.Option(
    None, "--config", help="Platform config (default configs/platform.yaml)."
)
RegistryOption = typer.Option(
    None, "--registry", help="Registry root URI or path (default: the config's registry.root_uri)."
)
AliasOption = typer.Option("champion", "--alias", help="Alias to move (champion or challenger).")
ContractOption = typer.Option(
    None,
    "--contract",
    help="Contract (name or YAML path) whose feature spec the version must match "
    "(default: the contract the version was registered for).",
)


def _registry(config: Path | None, registry: str | None) -> ModelRegistry:
    # Imported here: sluice.models pulls in torch (seconds), which no other command needs.
    from sluice.models import ModelRegistry

    return ModelRegistry(registry) if registry else ModelRegistry.from_config(
        load_platform_config(config)
    )  # fmt: skip


def _contract_of(manifest: Manifest, version: int | None, contract: str | None) -> Contract | None:
    """The contract a version that an alias is about to point at must match.

    None when there is no such version: the registry then refuses the move itself.
    """
    from sluice.contract import load_contract

    if contract is None:
        if version is None:
            return None
        contract = _run(lambda: manifest.record(version)).contract
    return _run(lambda: load_contract(contract))


def _run(action: Callable[[], T]) -> T:
    """Registry errors become one `error:` line and exit status 1, not a traceback."""
    try:
        return action()
    except SluiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command("list")
def list_(
    name: str | None = typer.Argument(None, help="A model: list its versions."),
    config: Path | None = ConfigOption,
    registry: str | None = RegistryOption,
) -> None:
    """List models, or the versions of one model."""
    reg = _registry(config, registry)
    if name is None:
        models = _run(reg.list_models)
        if not models:
            typer.echo(f"no models in {reg.root_uri}")
            return
        rows = [(m.name, m.versions, m.latest, aliases_text(m.aliases)) for m in models]
        typer.echo(text_table(("MODEL", "VERSIONS", "LATEST", "ALIASES"), rows))
        return
    manifest = _run(lambda: reg.manifest(name))
    rows = [
        (
            r.version,
            r.registered_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.contract,
            num(r.metrics.get("holdout_auc")),
            ",".join(manifest.aliases_of(r.version)) or "-",
        )
        for r in manifest.versions
    ]
    headers = ("VERSION", "REGISTERED (UTC)", "CONTRACT", "HOLDOUT AUC", "ALIASES")
    typer.echo(text_table(headers, rows))


@app.command()
def register(
    name: str = typer.Argument(..., help="Model name, e.g. fraud."),
    path: str = typer.Argument(
        ..., help="An artifact directory (model.onnx, model.pt2 or model.ts + meta.json), or a "
        "model file with --meta.",
    ),
    meta_path: str | None = typer.Option(
        None, "--meta", help="meta.json for a model file (feature names, stats, reference)."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="onnx, torch-export or torchscript (default: detected)."
    ),
    trusted: bool = typer.Option(
        False, "--trusted", help="The artifact comes from a trusted source: allow formats that "
        "run code when loaded (TorchScript, a .pt2 with pickled objects). Recorded.",
    ),
    link: str | None = typer.Option(
        None, "--link", help="probability (the output is the score) or logit (sigmoid of it)."
    ),
    output_index: int | None = typer.Option(None, "--output-index", min=0,
                                            help="Which model output is the score."),
    output_column: int | None = typer.Option(None, "--output-column", min=0,
                                             help="Column of a (rows, k) output, e.g. 1."),
    alias: str | None = typer.Option(None, "--alias", help="Also point this alias at it."),
    holdout: str | None = typer.Option(
        None, "--holdout", help="Labelled Parquet (the contract's input columns and label) "
        "the model never trained on: the version is judged on it by the contract's promotion "
        "gate and the report is stored with it (without one, it cannot lead under a gate).",
    ),
    contract: str | None = ContractOption,
    config: Path | None = ConfigOption,
    registry: str | None = RegistryOption,
) -> None:
    """Register a model artifact as a new immutable version.

    The format is detected from the file's content (--format must agree); the model's
    input and output are checked against the feature names in meta.json; a format that
    runs code when loaded needs --trusted. A refused artifact leaves nothing registered.
    With --holdout the version is judged by its contract's gate before it is registered.
    """
    from sluice.models._artifact import read_artifact

    reg = _registry(config, registry)
    if "://" in path:  # an artifact directory on any pyarrow filesystem (s3://, gs://, ...)
        if meta_path or fmt:
            raise typer.BadParameter("a URI names an artifact directory: no --meta/--format",
                                     param_hint="--meta")  # fmt: skip
        artifact = _run(lambda: read_artifact(path, trusted=trusted))
        meta, model = artifact.meta, artifact.data
    else:
        model, meta = _local_artifact(path, meta_path, fmt, trusted)
    if link is not None or output_index is not None or output_column is not None:
        output = meta.output.model_dump()
        output.update({k: v for k, v in (("link", link), ("index", output_index),
                                          ("column", output_column)) if v is not None})  # fmt: skip
        meta = meta.model_copy(update={"output": _run(lambda: _output(output))})
    # A gate verdict is this registry's (--holdout), never one a meta.json brings: it was
    # judged against another registry's champion, or written by anyone.
    meta = meta.model_copy(update={"gate": None})
    if holdout is not None:
        meta = _run(lambda: _judged(reg, name, model, meta, holdout, contract))
    version = _run(lambda: reg.register(name, model, meta))
    trust = "  (trusted source)" if meta.trusted else ""
    typer.echo(f"registered {name}/{version}  format {meta.format}{trust}")
    if meta.gate is not None:
        from sluice.gate import format_report

        typer.echo(f"\n{format_report(meta.gate)}\n")
    if alias:  # the same check as `promote`: the alias moves only to a version that fits
        spec = _contract_of(_run(lambda: reg.manifest(name)), version, contract)
        _run(lambda: reg.promote(name, version, alias=alias, contract=spec))
        typer.echo(f"{name}@{alias} -> {version}")


def _judged(reg: ModelRegistry, name: str, model: Path | bytes, meta: ModelMeta,
            holdout: str, contract: str | None) -> ModelMeta:  # fmt: skip
    """`meta` with the gate's report and the holdout metrics of the model on `holdout`'s
    valid rows (their aggregates computed from the file's own events, in time order)."""
    from sluice.cli._paths import user_path
    from sluice.contract import load_contract
    from sluice.drift import read_labels
    from sluice.features import InMemoryFeatureStore, to_store_events
    from sluice.gate import judge_candidate, labels_of, open_candidate
    from sluice.models import check_feature_spec
    from sluice.models._artifact import model_bytes

    spec = load_contract(contract or meta.contract)
    check_feature_spec(f"{meta.contract} model", meta.feature_spec_hash, spec)
    rows = read_labels(user_path(holdout), spec, option="--holdout").table
    rows = rows.sort_by([(spec.event_time_column, "ascending")])
    store = InMemoryFeatureStore()
    store.record(to_store_events(rows, spec.features))
    candidate = open_candidate(model_bytes(model), meta, spec)
    verdict = judge_candidate(spec, reg, candidate, rows, store, name=name)
    metrics = {**meta.metrics, **verdict.metrics(labels_of(rows, spec))}
    return meta.model_copy(update={"gate": verdict.report, "metrics": metrics})


def _local_artifact(path: str, meta_path: str | None, fmt: str | None,
                    trusted: bool) -> tuple[Path, ModelMeta]:  # fmt: skip
    """(model file, meta) of a local artifact directory or model file + --meta."""
    from sluice.cli._paths import user_path
    from sluice.models import detect_format
    from sluice.models._artifact import META_FILE, model_bytes, parse_meta

    source = Path(user_path(path))
    if not source.exists():
        typer.echo(f"error: {path}: no such model file or artifact directory", err=True)
        raise typer.Exit(1)
    if source.is_dir():
        if meta_path:
            raise typer.BadParameter("--meta is for a model file, not a directory", "--meta")
        meta_file, model_path = source / META_FILE, _model_file_in(source)
    elif meta_path:
        meta_file, model_path = Path(user_path(meta_path)), source
    else:
        raise typer.BadParameter(f"{path} is a model file: give its --meta meta.json",
                                 param_hint="--meta")  # fmt: skip
    if not meta_file.is_file():
        typer.echo(f"error: {meta_file}: no such {META_FILE} (the model's feature names, "
                   "feature stats and training reference)", err=True)  # fmt: skip
        raise typer.Exit(1)
    meta = _run(lambda: parse_meta(meta_file.read_bytes(), str(meta_file)))
    data = _run(lambda: model_bytes(model_path))
    found = _run(lambda: detect_format(data, str(model_path), declared=fmt))
    # Trust is what the person registering says now, never what a meta.json claims.
    return model_path, meta.model_copy(update={"format": found, "trusted": trusted})


def _model_file_in(directory: Path) -> Path:
    """The one model file of an artifact directory (model.onnx, model.pt2 or model.ts)."""
    from sluice.models import FORMATS

    found = [directory / i.file for i in FORMATS.values() if (directory / i.file).is_file()]
    if len(found) != 1:
        names = ", ".join(i.file for i in FORMATS.values())
        typer.echo(f"error: {directory}: expected exactly one model file ({names}), found "
                   f"{[f.name for f in found] or 'none'}", err=True)  # fmt: skip
        raise typer.Exit(1)
    return found[0]


def _output(values: dict[str, object]) -> ModelOutput:
    """The score output the options describe; a bad value is one `error:` line."""
    from pydantic import ValidationError

    from sluice.errors import ConfigError
    from sluice.models import ModelOutput

    try:
        return ModelOutput.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"bad score output {values}: {exc}") from None


@app.command()
def promote(
    name: str = typer.Argument(..., help="Model name."),
    version: int | None = typer.Argument(None, help="Version (default: the challenger)."),
    alias: str = AliasOption,
    force: bool = typer.Option(
        False, "--force", help="Promote to champion although the version fails its contract's "
        "gate (or has no gate report); needs --reason. Recorded in the alias history.",
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why the gate is overridden."),
    contract: str | None = ContractOption,
    config: Path | None = ConfigOption,
    registry: str | None = RegistryOption,
) -> None:
    """Point an alias (default champion) at a version; the old one is kept for rollback.

    A version trained on another feature spec than its contract declares is refused; so is
    a champion that fails the contract's promotion gate, each failed check named with its
    figure and threshold (`sluice models show NAME/VERSION` prints the whole report).
    """
    if force != (reason is not None):
        raise typer.BadParameter("--force and --reason \"...\" go together: say why the gate "
                                 "is overridden", param_hint="--force")  # fmt: skip
    reg = _registry(config, registry)
    manifest = _run(lambda: reg.manifest(name))
    before = manifest.aliases.get(alias)
    target = version if version is not None else manifest.aliases.get("challenger")
    spec = _contract_of(manifest, target, contract)
    after = _run(lambda: reg.promote(name, version, alias=alias, contract=spec,
                                     force_reason=reason))  # fmt: skip
    typer.echo(f"{name}@{alias}: {before if before is not None else '-'} -> {after}")
    moves = [e for e in reg.manifest(name).events if e.action == "promote"] if force else []
    event = moves[-1] if moves else None
    if event is not None and event.overridden:
        typer.echo(f"forced past {len(event.overridden)} failed gate check(s) by {event.actor}; "
                   f"reason recorded: {event.reason}")  # fmt: skip


@app.command()
def rollback(
    name: str = typer.Argument(..., help="Model name."),
    alias: str = AliasOption,
    contract: str | None = ContractOption,
    config: Path | None = ConfigOption,
    registry: str | None = RegistryOption,
) -> None:
    """Move an alias (default champion) back to the version it held before."""
    reg = _registry(config, registry)
    manifest = _run(lambda: reg.manifest(name))
    before = manifest.aliases.get(alias)
    history = manifest.alias_history.get(alias) or [None]
    spec = _contract_of(manifest, history[-1], contract)
    after = _run(lambda: reg.rollback(name, alias=alias, contract=spec))
    typer.echo(f"{name}@{alias}: {before} -> {after}")


@app.command()
def show(
    ref: str = typer.Argument(..., help="fraud (the model), fraud@champion or fraud/3."),
    config: Path | None = ConfigOption,
    registry: str | None = RegistryOption,
) -> None:
    """Show a model (aliases, history) or one version (metrics, lineage, features)."""
    reg = _registry(config, registry)
    from sluice.models import parse_model_ref

    parsed = _run(lambda: parse_model_ref(ref))
    if "@" not in ref and "/" not in ref:
        typer.echo(model_history(_run(lambda: reg.manifest(parsed.name))))
    else:
        typer.echo(model_card(_run(lambda: reg.show(parsed))))


@app.command()
def compare(
    name: str = typer.Argument(..., help="Model (its contract's name), e.g. fraud."),
    since: str = typer.Option("1h", "--since", help="How far back to read the prediction "
                              "log: 90s, 30m, 1h, 2d."),  # fmt: skip
    labels: str | None = typer.Option(
        None, "--labels", help="Parquet of the contract's key and label columns: each "
        "version's AUC on the compared rows that have one.",
    ),
    metrics_file: str | None = typer.Option(
        None, "--metrics-file", help="Also write the figures as Prometheus gauges here "
        "(node_exporter textfile collector).",
    ),
    contract: str | None = typer.Option(None, "--contract", help="Contract (default: NAME)."),
    config: Path | None = ConfigOption,
) -> None:
    """Versions side by side on the same live rows: champion, challenger and shadow.

    Reads the prediction log (a full scan with a time filter) and prints, per pair of
    versions that scored the same keys: rows, score correlation, decision agreement,
    mean |score delta|, and each version's AUC where --labels gives labels.
    """
    from datetime import UTC, datetime

    from sluice.cli._paths import user_path
    from sluice.contract import load_contract
    from sluice.drift import (
        compare_versions,
        format_pairs,
        parse_window,
        read_key_labels,
        read_log_scores,
        write_compare_metrics,
    )
    from sluice.store import session_for

    cfg = load_platform_config(config)
    spec = _run(lambda: load_contract(contract or name))
    try:
        window = parse_window(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    key_labels = None if labels is None else _run(lambda: read_key_labels(user_path(labels),
                                                                         spec))  # fmt: skip
    start = datetime.now(UTC) - window
    session = _run(lambda: session_for(cfg.cassandra))
    rows = _run(lambda: read_log_scores(session, cfg.cassandra.keyspace, spec, since=start))
    pairs = compare_versions(rows, key_labels)
    typer.echo(f"contract {spec.name}: {len(rows)} prediction-log rows since "
               f"{start:%Y-%m-%d %H:%M:%S} UTC\n")  # fmt: skip
    typer.echo(format_pairs(rows, pairs))
    if metrics_file:
        written = write_compare_metrics(spec.name, pairs, user_path(metrics_file))
        typer.echo(f"\nmetrics {written}")
