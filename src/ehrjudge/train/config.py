"""TrainConfig: one typed config for the three RLVR trainers (expected, reinforce, grpo).

Defaults, then YAML, then `--key value` flags (`ehrjudge.config.load_config`); unknown keys fail.
The defaults are the settings measured best (docs/training.md): configs/train_default.yaml and the run's
`default` profile hold only what differs from them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ehrjudge.config import option
from ehrjudge.judge.prompt import PromptConfig

Method = Literal["expected", "reinforce", "grpo"]
RewardShape = Literal["quadratic", "absolute", "exact"]
Advantage = Literal["raw", "batch_mean", "normalized"]
Prediction = Literal["expected", "argmax"]

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclasses.dataclass
class TrainConfig:
    method: Method = option("expected", "expected = exact expected reward over the 10 labels (one forward, no "
                                        "sampling); reinforce = the original sampled policy gradient; grpo = group-"
                                        "normalized advantages with a PPO-clipped ratio")
    model: str | None = option(None, "judge base model: None = the default SmolLM2-135M-Instruct, or a local HF dir")
    dataset: str | None = option(None, "judge dataset dir (reference/, train/val/test/test_unseen.parquet); "
                                       "None = the default dataset")
    output_dir: str = option("runs/train", "run directory: config.yaml, checkpoints/, best/, final/, metrics")
    device: str = option("auto", "torch device: auto, cpu, cuda")
    num_threads: int = option(0, "torch CPU threads (0 = torch's default); 1 is faster on an oversubscribed CPU")
    dtype: str = option("auto", "weights dtype: auto (fp32 on CPU), float32, bfloat16")

    lora_r: int = option(16, "LoRA rank; 0 = full fine-tuning (of the top `train_layers` layers if set)")
    lora_alpha: int = option(32, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = option(0.0, "dropout on the LoRA input")
    lora_target_modules: list[str] = option(ALL_LINEAR, "module names that get LoRA adapters")
    train_layers: int = option(4, "adapt only the top N decoder layers (0 = all); the frozen lower layers are "
                                  "then run once per prompt and cached (see cache_lower_layers)")
    cache_lower_layers: bool = option(True, "cache the frozen lower layers' hidden states per record and reuse "
                                            "them every epoch (needs train_layers > 0)")

    # 0.01 (the original's) collapsed to one label by step 50; 0.05 never did and ranked best (docs/training.md).
    kl_coef: float = option(0.05, "beta in loss = -J + beta * KL(pi || pi_ref); 0 = no reference is loaded or "
                                  "computed at all")
    reward: RewardShape = option("quadratic", "reward of label j for score s: quadratic 1-(|j-s|/9)^2 (the "
                                              "original), absolute 1-|j-s|/9, exact 1[j=s]")
    reward_after_caps: bool = option(True, "score each answer as capped_score reads it, min(label, the cap the "
                                           "prompt's cap line states), where the prompt has that line: the caps the "
                                           "text states are applied exactly at inference, so the judge learns the "
                                           "rest (docs/training.md); also ranks validation by the capped score")
    advantage: Advantage = option("raw", "reinforce: raw = A = r (the original), batch_mean = r - mean(r), "
                                         "normalized = (r - mean(r)) / std(r) over the batch; expected: normalized = the exact group-normalized (GRPO) advantage "
                                         "(r_k - E_pi r) / std_pi r over the 10 labels (raw/batch_mean: plain "
                                         "expected reward, a baseline does not change an exact gradient)")
    group_size: int = option(4, "grpo: samples per record (G)")
    clip_eps: float = option(0.2, "grpo: PPO clip range epsilon on the ratio pi/pi_old")
    grpo_iterations: int = option(1, "grpo: optimizer updates per sampled batch (mu); >1 makes the clip active")

    learning_rate: float = option(2e-3, "AdamW learning rate (peak, after warmup); 2e-3 ranked best in the "
                                        "150-step probe (docs/training.md)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_steps: int = option(10, "linear warmup steps, then linear decay to 10% at the last step")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 = off)")
    batch_size: int = option(8, "records per micro-batch")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    # The budget is steps and epochs, so the same seed and config train the same judge on any machine.
    epochs: int = option(5, "at most this many passes over the training split")
    max_steps: int = option(256, "at most this many optimizer steps (0 = no step cap: `epochs` alone set the "
                                 "budget); 256 = two epochs of the 1,024-record subset in batches of 8, so that "
                                 "`make run` fits 45 min on 2 AVX2 cores (docs/training.md, 'Step budget')")
    max_wall_minutes: float = option(0.0, "safety stop, not a budget (0 = off, the default): stop (and checkpoint) "
                                          "after this much wall time; when it fires it is logged as a warning, "
                                          "written to the history as train/wall_cap_fired and reported as "
                                          "stopped_by 'wall time' in summary.json (such a run is not reproducible)")
    train_records: int = option(1024, "train on a seeded random subset of N records (0 = all); the frozen pass "
                                      "costs ~0.65 s a record on 2 AVX2 cores")
    val_records: int = option(0, "validate on a seeded random subset of N records (0 = all); best/ is chosen on "
                                 "it, and 96 records were too noisy")
    eval_every: int = option(50, "validate every N optimizer steps (and at the end)")
    checkpoint_every: int = option(50, "checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int = option(2, "keep the latest N step checkpoints (best/ is kept separately)")
    log_every: int = option(5, "log train metrics every N optimizer steps")
    prediction: Prediction = option("expected", "judge score used for validation: expected = sum_k k*pi(k), "
                                                "argmax = most likely label")
    seed: int = option(42, "seed for data order, sampling and LoRA init")
    tracking: str = option("mlflow,tensorboard", "comma list of trackers (mlflow, tensorboard) or none; in "
                                                 "`ehrjudge run`, the run's `tracking: none` turns these off too")
    debug: bool = option(False, "log per-batch judge scores vs targets, label counts and advantages")

    # A short record text is the main CPU lever: fwd+bwd cost is linear in tokens (~160 tokens/s here).
    # "findings_dcr" shows the record's most unusual values with their z against the reference, what the hardened
    # score's record checks found and how close its closest reference patient is (judge/findings.py): on hardened
    # labels, with memorized copies in the pool (synth.config.DEFAULT_POOL), test_unseen Spearman 0.861 against
    # 0.577 for "findings" (no patient line) on the same data (docs/training.md). It reads the reference and held-out
    # patients when judging; "findings" is the judge to hand to someone who does not hold the cohort. show_caps ends
    # the check lines with the score cap they impose: test 0.868 -> 0.939, test_unseen 0.861 -> 0.959.
    prompt: PromptConfig = option(PromptConfig(record_format="findings_dcr", max_record_tokens=192, show_caps=True,
                                               system_prompt="You rate synthetic patient records."),
                                  "prompt settings (ehrjudge.judge.prompt.PromptConfig), incl. record_format "
                                  "and the record token budget max_record_tokens")
