"""The generator policy: a causal LM (+ LoRA) that writes one record after a fixed prompt.

    sequence  = PROMPT tokens, then the record text's tokens, then EOS
    log pi(o) = sum_t log pi(o_t | PROMPT, o_<t)         over the completion's tokens up to and including EOS

Every completion follows the same prompt, so a batch of samples needs no padding on the left; completions are
right-padded after their EOS and masked out of every sum.
"""

from __future__ import annotations

import torch

PROMPT = "A realistic patient record:\n"


def add_lora(model, r: int, alpha: int, train_layers: int, seed: int):
    """The model with a fresh LoRA adapter on every linear layer of its top `train_layers` decoder layers."""
    from peft import LoraConfig, get_peft_model

    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers - train_layers, n_layers)) if 0 < train_layers < n_layers else None
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, layers_to_transform=layers,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def prompt_ids(tokenizer) -> list[int]:
    return tokenizer(PROMPT, add_special_tokens=False).input_ids


def encode(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, completion_mask), both (B, T): PROMPT + text + EOS, right-padded; the mask marks text + EOS."""
    prompt = prompt_ids(tokenizer)
    rows = [prompt + tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for text in texts]
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, len(prompt):len(row)] = True
    return ids, mask


def token_log_probs(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T-1) log pi(ids[:, t+1] | ids[:, :t+1]), zero where mask[:, t+1] is False (prompt and padding)."""
    attention = torch.ones_like(ids)
    attention[:, 1:] = (mask[:, 1:] | ~mask.cumsum(1).bool()[:, 1:]).long()  # prompt and completion, not padding
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()  # (B, T-1, V)
    chosen = torch.gather(logits.log_softmax(-1), 2, ids[:, 1:, None]).squeeze(2)  # (B, T-1)
    return chosen * mask[:, 1:]


@torch.no_grad()
def sample(model, tokenizer, n: int, max_new_tokens: int, temperature: float, seed: int,
           batch_size: int) -> tuple[list[str], torch.Tensor, torch.Tensor, list[bool]]:
    """n completions: (texts, input_ids (n, T), completion_mask (n, T), finished) where finished says the
    completion ended with EOS within `max_new_tokens` (one that did not is cut off)."""
    prompt = torch.tensor([prompt_ids(tokenizer)])
    texts, rows, finished = [], [], []
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        batch = prompt.repeat(size, 1)
        out = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), do_sample=True,
                             temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, prompt.shape[1]:].tolist():
            end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
            finished.append(tokenizer.eos_token_id in row)
            rows.append(row[:end])
            texts.append(tokenizer.decode(row[:end], skip_special_tokens=True))
    model.train(was_training)
    width = prompt.shape[1] + max(len(r) for r in rows)
    ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, :prompt.shape[1]] = prompt[0]
        ids[i, prompt.shape[1]:prompt.shape[1] + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, prompt.shape[1]:prompt.shape[1] + len(row)] = True
    return texts, ids, mask, finished
