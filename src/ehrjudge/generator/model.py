"""A tuned generator as a folder, and sampling records from it.

    generator/
      generator.json    base model, record format (digits), sampling settings, reward, steps
      schema.json       the reference schema the records follow
      warm_start/       LoRA adapter of the warm start (merged into the base at load)
      rl/               LoRA adapter of the RL stage (absent for reward none)

`TunedGenerator.load(folder).sample(n, seed)` gives records (record_id, generator, schema columns) and the parse
failures, so `ehrjudge gate` (and a user) can sample a checkpoint without the run that made it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import InputError
from ehrjudge.generator.policy import sample
from ehrjudge.generator.record_text import RecordFormat, RecordParseError

GENERATOR_FILE = "generator.json"


@dataclasses.dataclass
class Samples:
    """Parsed records and what did not parse."""

    records: pd.DataFrame  # record_id, generator, then the schema's columns; parsed completions only
    texts: list[str]  # every completion, in sampling order
    parsed: np.ndarray  # (n,) bool: completion i parsed (its row is records.iloc[parsed[:i].sum()])
    failures: list[str]  # the parse error of each completion that did not parse
    ids: object = None  # (n, T) sampled token ids (prompt + completion) when sampled here, for the policy loss
    mask: object = None  # (n, T) bool: the completion's tokens

    @property
    def failure_rate(self) -> float:
        return float(1.0 - self.parsed.mean()) if len(self.parsed) else 0.0


def parse_completions(texts: list[str], finished: list[bool], fmt: RecordFormat, name: str,
                      id_prefix: str) -> Samples:
    """Parse each completion; one cut off at max_new_tokens or not a record is a failure with its reason."""
    rows, parsed, failures, ids = [], [], [], []
    for i, (text, done) in enumerate(zip(texts, finished)):
        try:
            if not done:
                raise RecordParseError("cut off at max_new_tokens before the end of the record")
            rows.append(fmt.parse(text))
            ids.append(f"{id_prefix}-{i}")
            parsed.append(True)
        except RecordParseError as exc:
            failures.append(str(exc))
            parsed.append(False)
    names = fmt.schema.names
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    records = pd.concat([pd.DataFrame({"record_id": ids, "generator": name}),
                         pd.DataFrame(matrix, columns=names)], axis=1)
    return Samples(records, texts, np.array(parsed, dtype=bool), failures)


def sample_records(model, tokenizer, fmt: RecordFormat, n: int, max_new_tokens: int, temperature: float, seed: int,
                   name: str, batch_size: int) -> Samples:
    """n completions of the policy, parsed (record ids `name-sSEED-i`)."""
    texts, ids, mask, finished = sample(model, tokenizer, n, max_new_tokens, temperature, seed, batch_size)
    samples = parse_completions(texts, finished, fmt, name, f"{name}-s{seed}")
    samples.ids, samples.mask = ids, mask
    return samples


def save_generator(folder: Path, schema: Schema, config, steps_done: int, warm_start_adapter: Path,
                   rl_model=None) -> None:
    """Write the folder layout above into `folder` (an existing, usually temporary, directory)."""
    import shutil

    from ehrjudge.config import to_dict
    from ehrjudge.io import write_json

    schema.save(folder / "schema.json")
    shutil.copytree(warm_start_adapter, folder / "warm_start")
    if rl_model is not None:
        rl_model.save_pretrained(folder / "rl")
    write_json(folder / GENERATOR_FILE, {"base_model": config.model, "digits": config.digits,
                                         "max_new_tokens": config.max_new_tokens, "temperature": config.temperature,
                                         "reward": config.reward, "rl_steps": steps_done,
                                         "tune_config": to_dict(config)})


@dataclasses.dataclass
class TunedGenerator:
    model: object
    tokenizer: object
    format: RecordFormat
    settings: dict

    @classmethod
    def load(cls, folder) -> "TunedGenerator":
        from peft import PeftModel

        from ehrjudge.judge.model import load_judge

        folder = Path(folder)
        info_file = folder / GENERATOR_FILE
        if not info_file.exists():
            raise InputError("not a tuned generator folder (no generator.json)", file=folder)
        settings = json.loads(info_file.read_text())
        model, tokenizer = load_judge(settings["base_model"])
        model = PeftModel.from_pretrained(model, folder / "warm_start").merge_and_unload()
        if (folder / "rl").is_dir():
            model = PeftModel.from_pretrained(model, folder / "rl")
        model.eval()
        fmt = RecordFormat(Schema.load(folder / "schema.json"), settings["digits"])
        return cls(model, tokenizer, fmt, settings)

    def sample(self, n: int, seed: int = 0, batch_size: int = 32, name: str = "tuned") -> Samples:
        return sample_records(self.model, self.tokenizer, self.format, n, self.settings["max_new_tokens"],
                              self.settings["temperature"], seed, name, batch_size)
