"""The judge prompt: the original auditor instruction, the record as table text, "Rating (1-10):", via the chat template."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from ehrjudge.config import option

AUDITOR_INSTRUCTION = ("You are a clinical data auditor. Given the synthetic patient record below, rate how realistic "
                       "it is. Return ONLY a single integer from 1 to 10.")

# The pairwise judge (judge/pairwise.py): two records, answer "A" or "B".
PAIRWISE_INSTRUCTION = ("You are a clinical data auditor. Given the two synthetic patient records below, say which "
                        "one is more realistic. Return ONLY the letter A or B.")
PAIRWISE_SUFFIX = "More realistic record (A or B):"


@dataclasses.dataclass
class PromptConfig:
    """How a record becomes the judge's prompt."""

    system_prompt: str | None = option(None, "system message; None keeps the chat template's own default")
    instruction: str = option(AUDITOR_INSTRUCTION, "the task instruction placed before the record")
    suffix: str = option("Rating (1-10):", "text after the record, right before the assistant turn")
    record_format: Literal["compact", "csv", "deviations", "findings", "findings_dcr"] = option(
        "compact", "record text layout (ehrjudge.cohort.text): compact, csv (the original's table), deviations "
                   "(the most unusual values with their z against the reference cohort; needs the reference) or "
                   "findings (deviations plus the hardened score's record checks: invalid values, rules broken, "
                   "codes per table; judge/findings.py) or findings_dcr (findings plus the closest reference patient's "
                   "distance against the near-copy threshold, the privacy cap's input: needs the reference patients "
                   "and held-out patients when judging, which no judge folder stores)")
    show_caps: bool = option(False, "findings and findings_dcr only: end the check lines with the score cap they "
                                    "imply ('Score cap: 4 (essential rule broken)' or 'Score cap: none'); off in "
                                    "judges saved before it, so their text is unchanged")
    show_typicality: bool = option(False, "findings_dcr only (it reads the patients): begin the check lines with "
                                          "the record's distance from the reference's centre over held-out "
                                          "patients' median, the hardened typicality's input")
    deviation_items: int = option(6, "deviations format: show this many features, most unusual first")
    max_record_tokens: int | None = option(384, "truncate the record text to this many tokens; None = no limit")
    chat_template: str | None = option(None, "Jinja chat template; None uses the tokenizer's own")


def needs_reference(record_format: str) -> bool:
    """Whether a record format reads the reference cohort's statistics."""
    return record_format in ("deviations", "findings", "findings_dcr")


PATIENT_FORMAT = "findings_dcr"  # the one record format that reads the reference patients themselves


def needs_patients(record_format: str) -> bool:
    """Whether a record format reads the reference patients themselves (ReferenceStats.patients), not only their
    statistics."""
    return record_format == PATIENT_FORMAT


def user_message(text: str, config: PromptConfig) -> str:
    return f"{config.instruction}\n\n{text}\n\n{config.suffix}"


def resolved_chat_template(tokenizer, config: PromptConfig | None = None) -> str:
    """The template string actually used, to be saved with every run."""
    config = config or PromptConfig()
    template = config.chat_template or tokenizer.chat_template
    if not template:
        raise ValueError("the tokenizer has no chat template; set PromptConfig.chat_template")
    return template


def build_prompt(text: str, tokenizer, template: PromptConfig | None = None) -> str:
    """The full prompt string (chat template applied, generation prompt added) for one record text."""
    config = template or PromptConfig()
    messages = []
    if config.system_prompt is not None:
        messages.append({"role": "system", "content": config.system_prompt})
    messages.append({"role": "user", "content": user_message(text, config)})
    return tokenizer.apply_chat_template(messages, chat_template=resolved_chat_template(tokenizer, config),
                                         tokenize=False, add_generation_prompt=True)


def saved_prompt(model_dir: str | Path) -> PromptConfig | None:
    """The prompt a saved judge was trained with, or None when the folder records none.

    Looked up in `ehrjudge.json` (the judge folder of `ehrjudge run`), then in the training run's `config.yaml`
    beside or above the checkpoint (`RUN/best`, `RUN/final`). A trained judge must read what it was trained on.
    """
    import yaml

    from ehrjudge.config import config_from_dict

    folder = Path(model_dir)
    info = folder / "ehrjudge.json"
    if info.exists():
        prompt = json.loads(info.read_text()).get("prompt")
        if prompt:
            return config_from_dict(PromptConfig, prompt, prefix="prompt.")
    for candidate in (folder / "config.yaml", folder.parent / "config.yaml"):
        if candidate.exists():
            data = yaml.safe_load(candidate.read_text()) or {}
            if "prompt" in data and "method" in data:  # a TrainConfig
                return config_from_dict(PromptConfig, data["prompt"], prefix="prompt.")
    return None
