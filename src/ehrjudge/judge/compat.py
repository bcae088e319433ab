"""Transformers-version differences the judge's forward pass (judge/forward.py) meets, in one place.

transformers 5.x names the KV-cache argument `cache` and returns it as `output.cache`, holding per-layer objects with
`.keys` / `.values`; 4.x used `past_key_values` (models) / `past_key_value` (decoder layers) and `key_cache` /
`value_cache` lists.
"""

from __future__ import annotations

import inspect

import torch


def cache_keyword(module) -> str:
    """The keyword under which `module.forward` takes a KV cache: `cache` (transformers >= 5.x), else
    `past_key_values` (4.x models) or `past_key_value` (4.x decoder layers). PEFT wrappers are looked through."""
    if hasattr(module, "get_base_model"):
        module = module.get_base_model()
    names = inspect.signature(module.forward).parameters
    for name in ("cache", "past_key_values", "past_key_value"):
        if name in names:
            return name
    raise TypeError(f"{type(module).__name__}.forward takes no KV cache argument")


def returned_cache(output):
    """The KV cache a forward returned (`cache`, or `past_key_values` before transformers 5.x)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def cache_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per decoder layer, the (keys, values) a DynamicCache holds, each (B, H_kv, T, D)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def new_dynamic_cache(config):
    """An empty DynamicCache for a model of this config."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:  # transformers 4.x takes no config
        return DynamicCache()
