"""Judge throughput on CPU: records/s of the default SmolLM2-135M judge at the default prompt length.

    python benchmarks/judge_throughput.py [--threads 2] [--records 32] [--out benchmarks/results/judge_throughput.json]
    python benchmarks/judge_throughput.py --train-config configs/train_default.yaml \
        --out benchmarks/results/judge_throughput_trained_prompt.json     # the trained judge's prompt
    ... --int8     # also torch's dynamic int8 quantization (measured and rejected: docs/judge.md)

Measures, on real records of the default cohort: records/s at batch 8 with and without the cached shared prompt
prefix in fp32 and with it in bf16 (only where the CPU multiplies bf16 natively, unless --dtypes says otherwise),
then batch 1 and 32 with the fastest of those;
tokens per record; how far bf16 and prefix reuse move the label distribution; the cost of the label continuation step
relative to the prompt forward; and the compute bound: FLOPs per record ~= 2 x non-embedding params x tokens
(Kaplan et al. 2020, eq. 2.1; attention adds 2 x n_layer x context x d_attn per token) vs measured matmul FLOP/s.
Each figure is the median of --repeats runs; the load average before and after is saved with them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ehrjudge.cohort.build import default_cohort
from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Cohort
from ehrjudge.config import load_config, to_dict
from ehrjudge.judge.prompt import PromptConfig
from ehrjudge.judge.forward import token_positions
from ehrjudge.judge.labels import LabelScorer
from ehrjudge.judge.model import load_judge
from ehrjudge.judge.precision import native_bf16
from ehrjudge.judge.scoring import record_prompts
from ehrjudge.train.config import TrainConfig

RESULTS = Path(__file__).parent / "results" / "judge_throughput.json"


def matmul_flops_per_second(dtype: torch.dtype, repeats: int = 20) -> float:
    """Achieved FLOP/s of a transformer-shaped matmul (tokens x hidden @ hidden x 4 hidden)."""
    a, b = torch.randn(1024, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * 1024 * 576 * 1536 * repeats / (time.perf_counter() - start)


def timed_scoring(model, scorer, prompts, batch_size, reuse_prefix, repeats) -> tuple[float, torch.Tensor]:
    """(records/s, (N, 10) label probabilities); the shared prefix is computed inside the timed region."""
    times = []
    with torch.no_grad():
        scorer.log_probs(model, prompts[:min(batch_size, 4)])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            prefix = scorer.shared_prefix(model, prompts) if reuse_prefix else None
            probs = torch.cat([scorer.log_probs(model, prompts[i:i + batch_size], prefix=prefix).exp()
                               for i in range(0, len(prompts), batch_size)])
            times.append(time.perf_counter() - start)
    return len(prompts) / statistics.median(times), probs.double()


def continuation_share(model, scorer, prompts, repeats: int) -> dict:
    """Time of the full scoring vs the prompt forward alone (logits_to_keep=1, cache on)."""
    batch = scorer.encode(prompts, "cpu")
    positions = token_positions(batch["attention_mask"])
    forward, full = [], []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)
            forward.append(time.perf_counter() - start)
            start = time.perf_counter()
            scorer.sequence_log_probs(model, prompts)
            full.append(time.perf_counter() - start)
    forward_s, full_s = statistics.median(forward), statistics.median(full)
    return {"prompt_forward_s": forward_s, "full_scoring_s": full_s,
            "continuation_over_forward": (full_s - forward_s) / forward_s}


def int8_dynamic(fp32_judge, fp32_probs: torch.Tensor, repeats: int) -> dict:
    """records/s of the judge with int8 dynamic quantization of the decoder's Linear layers (lm_head stays fp32),
    and how far its label distribution is from fp32's (batch 8, prefix reuse, the same prompts)."""
    model, scorer, prompts = fp32_judge
    quantized = copy.deepcopy(model)
    quantized.model = torch.ao.quantization.quantize_dynamic(quantized.model, {torch.nn.Linear}, dtype=torch.qint8)
    rate, probs = timed_scoring(quantized, scorer, prompts, 8, True, repeats)
    labels = torch.arange(1, 11, dtype=torch.float64)
    return {"records_per_second": rate,
            "max_abs_probability_difference": float((probs - fp32_probs).abs().max()),
            "max_abs_expected_score_difference": float(((probs - fp32_probs) @ labels).abs().max()),
            "argmax_agreement": float((probs.argmax(1) == fp32_probs.argmax(1)).double().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--train-config", type=Path, default=None,
                        help="use the prompt of this training YAML (e.g. configs/train_default.yaml) instead of the "
                             "judge's default prompt")
    parser.add_argument("--dtypes", default=None,
                        help="comma list of float32,bfloat16 (default: float32, plus bfloat16 where the CPU has native "
                             "bf16 matmul, avx512_bf16 or amx_bf16; elsewhere torch emulates it at a fraction of fp32)")
    parser.add_argument("--int8", action="store_true",
                        help="also measure torch's dynamic int8 quantization of the decoder's Linear layers (fbgemm) "
                             "and how far it moves the label distribution from fp32")
    args = parser.parse_args()
    dtypes = args.dtypes.split(",") if args.dtypes else ["float32"] + (["bfloat16"] if native_bf16() else [])
    prompt_config = load_config(TrainConfig, args.train_config).prompt if args.train_config else PromptConfig()
    torch.set_num_threads(args.threads)
    cohort = Cohort.load(default_cohort())
    records = cohort.vectors.rename(columns={cohort.id_column: "record_id"})
    rng = np.random.default_rng(0)
    records = records.iloc[rng.choice(len(records), args.records, replace=False)].reset_index(drop=True)

    results: dict = {"threads": args.threads, "records": args.records, "cpu": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "torch": torch.__version__, "native_bf16": native_bf16(),
                     "dtypes": dtypes, "load_average_before": list(os.getloadavg()), "runs": [],
                     "prompt": to_dict(prompt_config),
                     "train_config": str(args.train_config) if args.train_config else None}
    reference = ReferenceStats.from_cohort(cohort)  # the records' own cohort, for the "deviations" format
    distributions, judges = {}, {}

    def measure(dtype_name, batch_size, reuse_prefix):
        model, scorer, prompts = judges[dtype_name]
        rate, probs = timed_scoring(model, scorer, prompts, batch_size, reuse_prefix, args.repeats)
        distributions[(dtype_name, batch_size, reuse_prefix)] = probs
        run = {"dtype": dtype_name, "batch_size": batch_size, "effective_batch_size": min(batch_size, len(prompts)),
               "reuse_prefix": reuse_prefix, "records_per_second": rate}
        results["runs"].append(run)
        print(json.dumps(run), flush=True)

    # Pick the settings at batch 8 (prefix reuse on/off, fp32/bf16), then sweep batch sizes with the best.
    for dtype_name, dtype in [(name, getattr(torch, name)) for name in dtypes]:
        model, tokenizer = load_judge(dtype=dtype_name, device="cpu")
        scorer = LabelScorer(tokenizer)
        prompts = record_prompts(records, cohort.schema, tokenizer, prompt_config, reference)
        lengths = [len(x) for x in scorer.tokenize(prompts)]
        order = np.argsort(lengths, kind="stable")  # as judge_prompts does: length-sorted batches
        judges[dtype_name] = (model, scorer, [prompts[i] for i in order])
        results["tokens_per_record"] = {"mean": float(np.mean(lengths)), "min": int(min(lengths)),
                                        "max": int(max(lengths)),
                                        "shared_prefix": len(scorer.shared_prefix(model, prompts).token_ids)}
        for reuse_prefix in ((False, True) if dtype_name == "float32" else (True,)):
            measure(dtype_name, 8, reuse_prefix)
        results[f"continuation_{dtype_name}_batch8"] = continuation_share(model, scorer, judges[dtype_name][2][:8],
                                                                           args.repeats)
        results[f"matmul_gflops_{dtype_name}"] = matmul_flops_per_second(dtype) / 1e9
        results["non_embedding_params"] = sum(p.numel() for n, p in model.named_parameters()
                                              if "embed_tokens" not in n)
    best8 = max(results["runs"], key=lambda r: r["records_per_second"])
    for batch_size in (1, 32):
        measure(best8["dtype"], batch_size, best8["reuse_prefix"])

    config = judges["float32"][0].config
    tokens = results["tokens_per_record"]["mean"]
    attention = 2 * config.num_hidden_layers * tokens * config.hidden_size  # per token: Kaplan's 2 n_layer n_ctx d_attn
    flops = 2 * results["non_embedding_params"] * tokens + attention * tokens
    fp32 = distributions[("float32", 8, False)]
    prefix_difference = (distributions[("float32", 8, True)] - fp32).abs().max()
    best = max(results["runs"], key=lambda r: r["records_per_second"])
    results.update({
        "flops_per_record": flops,
        "compute_bound_records_per_second": {
            name: results[f"matmul_gflops_{name}"] * 1e9 / flops for name in dtypes},
        "prefix_reuse_vs_plain_max_abs_probability_difference": float(prefix_difference),
        "best": best, "load_average_after": list(os.getloadavg()),
    })
    if "bfloat16" in dtypes:
        bf16 = distributions[("bfloat16", 8, True)]
        difference = (bf16 - fp32).abs()
        results["bf16_vs_fp32"] = {"max_abs_probability_difference": float(difference.max()),
                                   "mean_abs_probability_difference": float(difference.mean()),
                                   "argmax_agreement": float((bf16.argmax(1) == fp32.argmax(1)).double().mean())}
    if args.int8:
        results["int8_dynamic"] = int8_dynamic(judges["float32"], distributions[("float32", 8, True)], args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"tokens/record: {results['tokens_per_record']}")
    print(f"FLOPs/record: {flops / 1e9:.1f} GFLOP; matmul " + ", ".join(
          f"{name} {results[f'matmul_gflops_{name}']:.0f} GFLOP/s" for name in dtypes) + " -> compute bound "
          + ", ".join(f"{k} {v:.2f} rec/s" for k, v in results["compute_bound_records_per_second"].items()))
    print("continuation / prompt forward (batch 8): " + ", ".join(
        f"{name} {results[f'continuation_{name}_batch8']['continuation_over_forward']:.1%}" for name in dtypes))
    if "bf16_vs_fp32" in results:
        print(f"bf16 vs fp32 label distribution: {results['bf16_vs_fp32']}")
    if "int8_dynamic" in results:
        print(f"int8 dynamic (batch 8, prefix reuse): {results['int8_dynamic']}")
    print(f"best: {best}; load average before {results['load_average_before']}, "
          f"after {results['load_average_after']} -> {args.out}")


if __name__ == "__main__":
    main()
