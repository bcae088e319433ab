"""`--engine ray` of `ehrjudge score` and `ehrjudge judge`: the same CSV bytes as the local engine, on a local Ray
cluster of two workers started here; the prefix merge against the all-at-once computation; Ray missing."""

import sys

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

import ehrjudge.engine
from ehrjudge.cli import app
from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.engine import EngineConfig, score_matrix
from ehrjudge.errors import ConfigError
from ehrjudge.judge.tiny import save_tiny_judge

N_CODES = 195  # ~200 columns: wide enough that a GEMM's row count changes its float sums (OpenBLAS, oneDNN)


def wide_schema() -> Schema:
    features = [FeatureSpec("gender", "demographics", "binary", "male (1) / female (0)"),
                FeatureSpec("age", "demographics", "continuous", "age in years"),
                FeatureSpec("is_dead", "demographics", "binary", "died"),
                FeatureSpec("admissions_count", "admissions", "count", "admissions"),
                FeatureSpec("diagnoses_count", "diagnoses", "count", "diagnoses")]
    features += [FeatureSpec(f"dx_d{j:03d}", "diagnoses", "count", f"Diagnosis {j}", code=f"D{j:03d}")
                 for j in range(N_CODES)]
    return Schema(features, source="test")


def wide_vectors(n: int, seed: int, id_column: str, id_prefix: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = rng.poisson(np.exp(np.linspace(-3.0, 0.5, N_CODES)) * rng.gamma(2.0, 0.5, (n, 1)))
    frame = pd.DataFrame(codes.astype(float), columns=[f"dx_d{j:03d}" for j in range(N_CODES)])
    frame.insert(0, "diagnoses_count", codes.sum(axis=1).astype(float))
    frame.insert(0, "admissions_count", 1.0 + rng.poisson(1.0, n))
    frame.insert(0, "is_dead", (rng.random(n) < 0.1).astype(float))
    frame.insert(0, "age", rng.uniform(20, 90, n).round())
    frame.insert(0, "gender", rng.integers(0, 2, n).astype(float))
    frame.insert(0, id_column, [f"{id_prefix}{i:04d}" for i in range(n)])
    return frame


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'ehrjudge[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def score_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine_score")
    schema = wide_schema()
    for name, n, seed in (("reference", 300, 1), ("holdout", 100, 2)):
        Cohort(wide_vectors(n, seed, "subject_id", name[0].upper()), schema).save(root / name)
    wide_vectors(70, 3, "record_id", "S").to_parquet(root / "synthetic.parquet", index=False)
    return root


def run_cli(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_score_on_ray_writes_the_local_csv_byte_for_byte(ray_cluster, score_inputs, tmp_path, one_torch_thread):
    # Setup: 70 records in chunks of 16, so the workers get five partitions, the last one short
    root = score_inputs
    common = ["score", "--reference", root / "reference", "--holdout", root / "holdout", "--synthetic",
              root / "synthetic.parquet", "--chunk-size", "16"]
    # Run: the local engine at the workers' thread count (1), then Ray with two workers
    with threadpool_limits(1):
        run_cli([*common, "--out", tmp_path / "local.csv"])
    run_cli([*common, "--out", tmp_path / "ray.csv", "--engine", "ray", "--workers", "2"])
    # Assert
    local, distributed = (tmp_path / "local.csv").read_bytes(), (tmp_path / "ray.csv").read_bytes()
    assert len(pd.read_csv(tmp_path / "ray.csv")) == 70
    assert distributed == local
    assert (tmp_path / "ray.config.yaml").read_text() == (tmp_path / "local.config.yaml").read_text()


def test_score_matrix_on_ray_equals_the_fitted_scorer(ray_cluster, score_inputs, one_torch_thread):
    # Setup
    from ehrjudge.scoring.realism import ScoreConfig, fit_scorer

    root = score_inputs
    scorer = fit_scorer(Cohort.load(root / "reference"), ScoreConfig(chunk_size=32), Cohort.load(root / "holdout"))
    matrix = wide_vectors(70, 4, "record_id", "Q").drop(columns="record_id").to_numpy()
    # Run
    with threadpool_limits(1):
        local = scorer.score(matrix)
    distributed = score_matrix(scorer, matrix, EngineConfig(engine="ray", workers=2))
    # Assert: every column, every value
    pd.testing.assert_frame_equal(distributed, local, check_exact=True)


JUDGE_FEATURES = [FeatureSpec("gender", "demographics", "binary", "gender"),
                  FeatureSpec("age", "demographics", "continuous", "age"),
                  FeatureSpec("is_dead", "demographics", "binary", "died"),
                  FeatureSpec("admissions_count", "admissions", "count", "admissions"),
                  FeatureSpec("diagnoses_count", "diagnoses", "count", "diagnoses"),
                  FeatureSpec("dx_icd10_i10", "diagnoses", "count", "Essential hypertension", "ICD10:I10"),
                  FeatureSpec("labs_count", "labs", "count", "labs")]


def judge_records(n: int, seed: int, id_column: str, id_prefix: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({id_column: [f"{id_prefix}{i:04d}" for i in range(n)],
                         "gender": rng.integers(0, 2, n).astype(float), "age": rng.uniform(18, 90, n).round(1),
                         "is_dead": (rng.random(n) < 0.1).astype(float),
                         "admissions_count": rng.integers(0, 6, n).astype(float),
                         "diagnoses_count": rng.integers(0, 900, n).astype(float),
                         "dx_icd10_i10": rng.integers(0, 3, n).astype(float),
                         "labs_count": rng.integers(0, 30000, n).astype(float)})


def test_judge_on_ray_writes_the_local_csv_byte_for_byte(ray_cluster, tmp_path, monkeypatch, one_torch_thread):
    # Setup: a tiny judge; prompts of differing lengths, rendered in partitions of 8 and judged one batch per call.
    # The first partition's records share their demographics, so its own token prefix is longer than the one all
    # prompts share: the workers must get the common one.
    from ehrjudge.engine import ray_partitions

    monkeypatch.setattr(ray_partitions, "PROMPT_RECORDS_PER_TASK", 8)
    monkeypatch.setattr(ray_partitions, "JUDGE_BATCHES_PER_TASK", 1)
    Cohort(judge_records(40, 0, "subject_id", "P"), Schema(JUDGE_FEATURES, source="test")).save(tmp_path / "ref")
    synthetic = judge_records(22, 1, "record_id", "X")
    synthetic.loc[:7, ["gender", "age", "is_dead"]] = [1.0, 50.0, 0.0]
    synthetic.to_parquet(tmp_path / "synthetic.parquet", index=False)
    model = save_tiny_judge(tmp_path / "tiny_model", seed=0)
    common = ["judge", "--reference", tmp_path / "ref", "--synthetic", tmp_path / "synthetic.parquet", "--model",
              model, "--batch-size", "4", "--prompt.record-format", "deviations"]
    # Run
    run_cli([*common, "--out", tmp_path / "local.csv"])
    run_cli([*common, "--out", tmp_path / "ray.csv", "--engine", "ray", "--workers", "2"])
    # Assert: same bytes, and the same resolved config (the chat template comes from a worker's tokenizer)
    scores = pd.read_csv(tmp_path / "ray.csv")
    assert scores["record_id"].tolist() == [f"X{i:04d}" for i in range(22)]
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert (tmp_path / "ray.config.yaml").read_text() == (tmp_path / "local.config.yaml").read_text()


def test_common_prefix_of_partitions_equals_the_prefix_of_all_prompts():
    # Setup: token lists sharing 5 tokens, some sharing more within a partition, one only 3 tokens long
    pytest.importorskip("ray", reason="Ray is an optional extra")
    from ehrjudge.engine.ray_partitions import common_prefix
    from ehrjudge.judge.labels import common_prefix_length

    rng = np.random.default_rng(0)
    shared = [1, 2, 3, 4, 5]
    for short in (False, True):
        ids = [shared + [9, 9] + rng.integers(10, 20, rng.integers(1, 6)).tolist() for _ in range(12)]
        ids[7] = shared + [8]
        if short:
            ids[10] = [1, 2, 3]
        parts = [ids[0:4], ids[4:9], ids[9:12]]
        # Run
        merged = common_prefix([p[0][:common_prefix_length(p)] for p in parts], min(len(x) for x in ids))
        # Assert
        assert merged == ids[0][:common_prefix_length(ids)]
        assert len(merged) == (2 if short else 5)


def test_engine_ray_without_ray_installed_names_the_install(monkeypatch):
    # Setup: Ray not importable
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "ehrjudge.engine.ray_partitions", raising=False)
    monkeypatch.delattr(ehrjudge.engine, "ray_partitions", raising=False)
    # Run / Assert
    with pytest.raises(ConfigError, match=r"pip install 'ehrjudge\[ray\]'"):
        score_matrix(None, np.zeros((1, 1)), EngineConfig(engine="ray"))


def test_unknown_engine_is_a_config_error():
    with pytest.raises(ConfigError, match="engine must be one of local, ray"):
        EngineConfig(engine="spark")
