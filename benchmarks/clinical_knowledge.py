"""Does the judge's base model know which diagnoses belong to one sex? The knowledge a held-out-rule judge would need.

    python benchmarks/clinical_knowledge.py [--model ID_OR_DIR] [--out benchmarks/results/clinical_knowledge.json]

Issue 15 asks the judge to catch clinical violations it never saw in training (a prostate code in a woman), where the
formula and the regressor cannot. A judge can only bring such a rule from its pre-training. This asks the base model,
zero-shot, through its chat template, for each diagnosis d and each sex:
    "Can a man be diagnosed with d? Answer Yes or No."      p_man   = p(Yes) / (p(Yes) + p(No))
    "Can a woman be diagnosed with d? Answer Yes or No."    p_woman
    gap(d) = p_right_sex - p_wrong_sex for a sex-specific d (> 0: it knows), |p_man - p_woman| for a neutral d
and prints each sex-specific diagnosis' gap beside the spread of the neutral ones, and the AUC of telling the
right-sex questions (should be Yes) from the wrong-sex ones (should be No) of the sex-specific diagnoses by p(Yes).
A model that knows gives gaps near 1 and an AUC near 1; one that does not, gaps inside the neutral spread and an AUC
near 0.5.
The diagnoses are ICD-10 titles: the sex-specific ones of the packaged rules' code lists (scoring/rules.yaml) that
clinical data commonly holds, and common neutral ones.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ehrjudge.io import write_json
from ehrjudge.judge.model import load_judge

ROOT = Path(__file__).resolve().parents[1]
MALE_ONLY = ["Malignant neoplasm of prostate", "Benign prostatic hyperplasia", "Malignant neoplasm of testis",
             "Hydrocele", "Orchitis and epididymitis", "Male erectile dysfunction"]
FEMALE_ONLY = ["Encounter for supervision of normal pregnancy", "Malignant neoplasm of cervix uteri",
               "Malignant neoplasm of ovary", "Endometriosis", "Leiomyoma of uterus", "Menopausal and female "
               "climacteric states", "Postpartum hemorrhage", "Preeclampsia"]
NEUTRAL = ["Essential (primary) hypertension", "Type 2 diabetes mellitus without complications", "Asthma, unspecified",
           "Malignant neoplasm of colon", "Pneumonia, unspecified", "Chronic kidney disease", "Atrial fibrillation",
           "Heart failure, unspecified", "Migraine, unspecified", "Low back pain", "Urinary tract infection",
           "Acute myocardial infarction"]


def yes_probability(model, tokenizer, question: str) -> float:
    """p(Yes) / (p(Yes) + p(No)) of the first answer token, summing the spaced and unspaced spellings."""
    messages = [{"role": "user", "content": f"{question} Answer Yes or No."}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)  # (V,)

    def mass(word: str) -> torch.Tensor:
        tokens = {tokenizer.encode(spelling, add_special_tokens=False)[0] for spelling in (word, " " + word)}
        return torch.logsumexp(log_probs[sorted(tokens)], dim=0)

    return float(torch.sigmoid(mass("Yes") - mass("No")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="base model id or folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "clinical_knowledge.json")
    args = parser.parse_args()

    start = time.perf_counter()
    model, tokenizer = load_judge(args.model, "cpu", "float32")
    rows = []
    for kind, names in (("male_only", MALE_ONLY), ("female_only", FEMALE_ONLY), ("neutral", NEUTRAL)):
        for name in names:
            p_man = yes_probability(model, tokenizer, f"Can a man be diagnosed with {name}?")
            p_woman = yes_probability(model, tokenizer, f"Can a woman be diagnosed with {name}?")
            gap = {"male_only": p_man - p_woman, "female_only": p_woman - p_man}.get(kind, abs(p_man - p_woman))
            rows.append({"diagnosis": name, "kind": kind, "p_yes_man": p_man, "p_yes_woman": p_woman, "gap": gap})
    specific_rows = [r for r in rows if r["kind"] != "neutral"]
    right_sex = [r["p_yes_man"] if r["kind"] == "male_only" else r["p_yes_woman"] for r in specific_rows]
    wrong_sex = [r["p_yes_woman"] if r["kind"] == "male_only" else r["p_yes_man"] for r in specific_rows]
    auc = roc_auc_score(np.r_[np.ones(len(right_sex)), np.zeros(len(wrong_sex))], np.r_[right_sex, wrong_sex])
    specific = [r["gap"] for r in rows if r["kind"] != "neutral"]
    neutral_gaps = [r["gap"] for r in rows if r["kind"] == "neutral"]
    result = {"model": args.model or "SmolLM2-135M-Instruct (default)", "machine": platform.machine(), "rows": rows,
              "auc_right_vs_wrong_sex": float(auc), "mean_gap_sex_specific": float(np.mean(specific)),
              "max_gap_neutral": float(np.max(neutral_gaps)), "wall_seconds": time.perf_counter() - start}
    write_json(args.out, result)
    print(f"{'diagnosis':50s} {'kind':12s} {'p(yes) man':>10s} {'woman':>7s} {'gap':>7s}")
    for r in rows:
        print(f"{r['diagnosis'][:50]:50s} {r['kind']:12s} {r['p_yes_man']:10.3f} {r['p_yes_woman']:7.3f} "
              f"{r['gap']:+7.3f}")
    print(f"sex-specific mean gap {result['mean_gap_sex_specific']:+.3f} (largest neutral |gap| "
          f"{result['max_gap_neutral']:.3f}); AUC right-sex vs wrong-sex question by p(yes) {auc:.3f} "
          "(1 = knows, 0.5 = not)")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
