"""`ehrjudge cohort` (build patient vectors from a source) and `ehrjudge show` (one record as judge text)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ehrjudge.cli.app import CONFIG_COMMAND, app, read_records, settings_command


@app.command("cohort", context_settings=CONFIG_COMMAND,
             cls=settings_command("ehrjudge.cohort.config:FeatureConfig"))
def cohort_command(
    ctx: typer.Context,
    source: str = typer.Option("clinosim", help="clinosim (built-in simulator), mimic (MIMIC-IV folder) or fhir"),
    out: Path = typer.Option(..., help="Output cohort directory (written atomically)"),
    path: Optional[Path] = typer.Option(None, help="Source folder/file: MIMIC-IV root, FHIR bundles/NDJSON, "
                                                   "or an existing clinosim output"),
    patients: Optional[int] = typer.Option(None, help="clinosim: patients with records (default: the built-in "
                                                      "cohort's, cohort/config.py DEFAULT_PATIENTS); mimic/fhir: "
                                                      "keep the first N subject ids (default all)"),
    seed: Optional[int] = typer.Option(None, help="clinosim simulator seed (default: cohort/config.py DEFAULT_SEED)"),
    config: Optional[Path] = typer.Option(None, help="YAML with FeatureConfig settings"),
    schema_from: Optional[Path] = typer.Option(None, "--schema-from",
                                               help="Re-apply this cohort dir's schema (same columns)"),
) -> None:
    """Build DIR/vectors.parquet + DIR/schema.json + DIR/raw/ from a source; extra --key value flags set the
    FeatureConfig settings listed below."""
    from ehrjudge.cohort.build import build_cohort
    from ehrjudge.cohort.config import DEFAULT_PATIENTS, DEFAULT_SEED, FeatureConfig
    from ehrjudge.cohort.schema import Schema
    from ehrjudge.config import load_config

    feature_config = load_config(FeatureConfig, config, ctx.args)
    if patients is None and source == "clinosim" and path is None:
        patients = DEFAULT_PATIENTS
    seed = DEFAULT_SEED if seed is None else seed
    schema = Schema.load(Path(schema_from) / "schema.json") if schema_from else None
    cohort = build_cohort(source, out, path=path, patients=patients, seed=seed, config=feature_config, schema=schema)
    matrix = cohort.matrix()
    sparsity = float((matrix == 0).mean()) if matrix.size else 0.0
    typer.echo(f"wrote {out}: {len(cohort)} patients x {matrix.shape[1]} features (source {source}, "
               f"{sparsity:.1%} zeros)")


@app.command("show")
def show_command(
    cohort: Path = typer.Option(..., help="Cohort directory"),
    record: str = typer.Option(..., help="subject_id (or record_id) of the record to show"),
    format: str = typer.Option("compact", help="compact (non-zero features, readable), csv (original table), "
                                                "deviations (most unusual values with their z against the cohort) "
                                                "findings (deviations plus the hardened score's record checks) or "
                                                "findings_dcr (findings plus the closest patient of the cohort, "
                                                "needs --holdout)"),
    max_tokens: Optional[int] = typer.Option(None, help="Token budget (counted with the judge's tokenizer "
                                                        "when --tokenizer is given, else whitespace words)"),
    tokenizer: Optional[str] = typer.Option(None, help="HF tokenizer folder/name used to count tokens"),
    records: Optional[Path] = typer.Option(None, help="A synthetic records file (parquet/CSV with record_id) "
                                                      "to read instead of the cohort's own vectors"),
    holdout: Optional[Path] = typer.Option(None, help="held-out real patients (cohort directory) for the "
                                                      "findings_dcr format's near-copy distance; default: the "
                                                      "holdout/ beside a dataset's reference/"),
    show_caps: bool = typer.Option(False, help="findings formats: end with the score cap the check lines impose "
                                               "(as a judge trained with prompt.show_caps reads it)"),
    show_typicality: bool = typer.Option(False, help="findings formats: begin with the distance from the cohort's "
                                                     "centre over held-out patients' median (needs --holdout)"),
) -> None:
    """Print one record of a cohort (or of a synthetic records file in its schema) as the judge's table text."""
    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.cohort.text import FINDINGS_FORMATS, record_to_text
    from ehrjudge.errors import InputError
    from ehrjudge.judge.prompt import needs_reference
    from ehrjudge.judge.reference import reference_for

    data = Cohort.load(cohort)
    reference = reference_for(cohort, format, holdout) if needs_reference(format) else None
    if records is not None:
        data = Cohort(vectors=read_records(records, data.schema), schema=data.schema)
    ids = data.vectors[data.id_column].astype(str)
    hits = data.vectors[ids == str(record)]
    if hits.empty:
        raise InputError(f"record {record!r} not found (first ids: {list(ids[:5])})", file=records or cohort,
                         column=data.id_column)
    count_tokens = None
    if max_tokens is not None:
        if tokenizer:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tokenizer)
            count_tokens = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        else:
            count_tokens = lambda text: len(text.split())  # noqa: E731
    row = hits.iloc[0]
    findings = None
    if format in FINDINGS_FORMATS:
        from ehrjudge.judge.findings import finding_lines

        findings = finding_lines(hits.iloc[:1], data.schema, reference, closest=format == "findings_dcr",
                                 caps=show_caps, typicality=show_typicality)[0]
    typer.echo(record_to_text(row.to_dict(), data.schema, fmt=format, max_tokens=max_tokens,
                              count_tokens=count_tokens, record_id=row[data.id_column],
                              reference=reference, findings=findings))
