"""`ablate`: a 3-cell grid on the tiny task writes one table; the frozen pass is shared across cells."""

import json

import pytest

from ehrjudge.judge.tiny import save_tiny_judge
from ehrjudge.train.ablate import AblateConfig, grid, run_ablation
from ehrjudge.train.config import TrainConfig
from ehrjudge.train.tiny import TINY_PROMPT, tiny_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_grid_varies_advantage_where_the_method_has_one():
    # Run
    cells = grid(AblateConfig())
    both = grid(AblateConfig(advantages=["raw", "normalized"], record_formats=["compact", "deviations"]))
    # Assert: 3 kl x 2 weights x 3 rewards = 18 per method; reinforce twice (raw, batch_mean); expected only raw
    # (batch_mean is the same exact gradient); grpo has no advantage choice
    assert len(cells) == 18 * 4
    assert {c["advantage"] for c in cells if c["method"] == "grpo"} == {"-"}
    assert {c["advantage"] for c in cells if c["method"] == "expected"} == {"raw"}
    # with normalized: expected and reinforce twice each, grpo once; times two record formats
    assert len(both) == 2 * 18 * 5 and {c["record_format"] for c in both} == {"compact", "deviations"}


def test_small_grid_writes_table(tmp_path):
    # Setup
    dataset = tiny_dataset(tmp_path / "data", n_train=16, n_eval=8, seed=2)
    model = save_tiny_judge(tmp_path / "judge")
    base = TrainConfig(model=str(model), dataset=str(dataset), train_layers=1, lora_r=4, learning_rate=1e-2,
                       max_steps=2, batch_size=8, eval_every=2, checkpoint_every=100, tracking="none",
                       val_records=0, max_wall_minutes=0, prompt=TINY_PROMPT)
    config = AblateConfig(output_dir=str(tmp_path / "ablate"), base=base, methods=["expected", "reinforce"],
                          kl_coefs=[0.0], weights=["0.85/0.15", "0.15/0.85"], rewards=["quadratic"], max_cells=3)
    # Run
    table = run_ablation(config)
    # Assert
    assert len(table) == 3 and list(table["method"]) == ["expected", "expected", "reinforce"]
    assert table["val_spearman_best"].notna().all()
    rows = json.loads((tmp_path / "ablate" / "table.json").read_text())
    assert len(rows) == 3 and (tmp_path / "ablate" / "table.md").read_text().count("\n| ") >= 4
    assert (tmp_path / "ablate" / "datasets" / "w0.15-0.85" / "train.parquet").exists()
