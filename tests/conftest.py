"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny-model tests: tiny matmuls on 2 OpenMP threads of a busy machine wait on each other (~3x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_tiny_judge(root, patch):
    """Train a tiny judge for 2 steps from a base checkpoint saved as root/cache/models/tiny-llama, with
    $EHRJUDGE_CACHE set to root/cache through `patch` (a pytest MonkeyPatch); returns root, which then holds
    cache/, dataset/ and run/ (best/, final/)."""
    from ehrjudge.judge.tiny import save_tiny_judge
    from ehrjudge.train.config import TrainConfig
    from ehrjudge.train.loop import train
    from ehrjudge.train.tiny import TINY_PROMPT, tiny_dataset

    base = save_tiny_judge(root / "cache" / "models" / "tiny-llama", seed=0)  # the tokenizer from the real cache
    patch.setenv("EHRJUDGE_CACHE", str(root / "cache"))
    dataset = tiny_dataset(root / "dataset", n_train=16, n_eval=8, seed=0)
    threads = torch.get_num_threads()
    try:
        train(TrainConfig(model=str(base), dataset=str(dataset), output_dir=str(root / "run"), tracking="none",
                          device="cpu", num_threads=1, lora_r=4, train_layers=1, learning_rate=1e-2, batch_size=8,
                          epochs=1, max_steps=0, max_wall_minutes=0, eval_every=1, checkpoint_every=2,
                          warmup_steps=1, train_records=0, val_records=0, prompt=TINY_PROMPT, seed=3),
              show_progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="module")
def tiny_trained_judge(tmp_path_factory):
    """train_tiny_judge's root, with $EHRJUDGE_CACHE pointing at its cache for the module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        yield train_tiny_judge(tmp_path_factory.mktemp("tiny-judge"), patch)
