"""Loads a model and its tokenizer through mlx-lm, from a folder or the HF cache, never the network.

Everything a folder can get wrong is checked before mlx-lm sees it, so the user reads
"tokenizer.json is missing" instead of a stack trace from deep inside transformers.
"""

import json
import pkgutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx_lm.models
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import MODEL_REMAPPING, load_model, load_tokenizer

from app import log
from app.engine import memory
from app.engine.errors import ModelError

logger = log.get("loader")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tiktoken.model")
# Modules in mlx_lm.models that are shared pieces, not architectures.
_NOT_ARCHS = {
    "activations", "base", "bitlinear_layers", "cache", "gated_delta", "mla", "pipeline",
    "rope_utils", "ssm", "switch_layers",
}


def supported_architectures() -> list[str]:
    mods = {m.name for m in pkgutil.iter_modules(mlx_lm.models.__path__)} - _NOT_ARCHS
    return sorted(mods | set(MODEL_REMAPPING))


def resolve(name: str) -> Path:
    """A local folder, or a repo id already in the Hugging Face cache. Never downloads."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{path} is a file; a model is a folder holding config.json, weights and a tokenizer.")
        return path
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(name, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
            raise ModelError(
                f"The model {name} is not downloaded. Get it in the model manager, "
                f"or run: folio models pull {name}"
            ) from None
    raise ModelError(f"No model folder at {path}.")


def read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.exists():
        raise ModelError(f"{path.name} has no config.json; it is not a Hugging Face model folder.")
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{cfg} is not valid JSON ({e}).") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelError(f"{cfg} does not name a model_type.")
    return config


def validate(path: Path) -> dict:
    """Check the folder has what loading needs; return its config."""
    config = read_config(path)
    arch = MODEL_REMAPPING.get(config["model_type"], config["model_type"])
    if arch not in supported_architectures():
        raise ModelError(
            f"The architecture {config['model_type']!r} is not supported. Supported: "
            + ", ".join(supported_architectures())
        )
    weights = sorted(path.glob("model*.safetensors"))
    if not weights:
        raise ModelError(f"{path.name} has no weights (model*.safetensors).")
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError):
            raise ModelError(f"{index.name} is malformed.") from None
        missing = sorted(s for s in shards if not (path / s).exists())
        if missing:
            raise ModelError(f"{path.name} is incomplete: missing weight files {', '.join(missing)}.")
    if not any((path / f).exists() for f in TOKENIZER_FILES):
        raise ModelError(f"{path.name} has no tokenizer (one of {', '.join(TOKENIZER_FILES)}).")
    return config


@dataclass
class ModelShape:
    """What the KV cache and the memory guard need to know about a model, probed once."""

    n_layers: int
    n_kv_heads: int
    head_dim: int
    windows: list  # per KV layer: None for full attention, else the sliding window
    attention_scale: float | None
    max_context: int
    dtype: str = "float16"

    @property
    def kv_layers(self) -> int:
        return len(self.windows)


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    path: Path
    model_id: str
    config: dict
    shape: ModelShape
    weights_bytes: int
    load_seconds: float
    extra: dict = field(default_factory=dict)


def weights_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("model*.safetensors"))


def probe_shape(model, config: dict) -> ModelShape:
    caches = make_prompt_cache(model)
    model(mx.array([[0]]), cache=caches)
    windows, heads, dims = [], set(), set()
    for c in caches:
        keys = getattr(c, "keys", None)
        if keys is None:
            continue
        heads.add(keys.shape[1])
        dims.add(keys.shape[-1])
        windows.append(getattr(c, "max_size", None))
    if not windows:
        raise ModelError("This model keeps no attention KV cache (a state-space model?); Folio needs a transformer.")
    layers = getattr(model, "layers", [])
    attn = getattr(layers[0], "self_attn", None) if layers else None
    scale = getattr(attn, "scale", None)
    text_cfg = config.get("text_config", config)
    max_ctx = int(text_cfg.get("max_position_embeddings") or config.get("max_position_embeddings") or 4096)
    dtype = next((str(v.dtype).split(".")[-1] for k, v in _flat(model) if "embed" in k), "float16")
    return ModelShape(
        n_layers=len(layers) or len(windows),
        n_kv_heads=max(heads),
        head_dim=max(dims),
        windows=windows,
        attention_scale=float(scale) if scale is not None else None,
        max_context=max_ctx,
        dtype=dtype,
    )


def _flat(model):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def _materialize(model, on_progress):
    """Read the lazily loaded weights layer by layer, so a multi-GB load can report progress."""
    layers = list(getattr(model, "layers", []))
    steps = len(layers) + 1
    for i, layer in enumerate(layers):
        mx.eval(layer.parameters())
        on_progress((i + 1) / steps)
    mx.eval(model.parameters())  # embeddings, norms, head: whatever is not in a layer
    on_progress(1.0)


def load(name: str, on_progress=None) -> LoadedModel:
    """Load `name`; `on_progress(fraction)` hears how much of the weights is read so far."""
    on_progress = on_progress or (lambda _f: None)
    path = resolve(name)
    config = validate(path)
    weights_bytes = weights_on_disk(path)
    memory.apply_limits()
    memory.check_fit(weights_bytes, 0, 0, "any mode")
    t0 = time.perf_counter()
    try:
        model, config = load_model(path, lazy=True)
        _materialize(model, on_progress)
    except ValueError as e:
        text = str(e)
        if "parameters" in text or "shape" in text.lower():
            raise ModelError(f"The weights in {path.name} do not match its config.json: {text.splitlines()[0][:300]}") from None
        raise ModelError(f"Could not build the model in {path.name}: {text[:300]}") from None
    except (OSError, RuntimeError) as e:
        raise ModelError(f"Could not read the weights in {path.name}: {str(e)[:300]}") from None
    try:
        tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    except Exception as e:  # transformers raises many unrelated types for a bad tokenizer
        raise ModelError(f"Could not load the tokenizer in {path.name}: {str(e)[:300]}") from None
    shape = probe_shape(model, config)
    seconds = time.perf_counter() - t0
    model_id = name if not Path(name).expanduser().exists() else path.resolve().name
    logger.info(
        "loaded %s from %s in %.2fs on %s (%s weights, %d KV layers, %d kv heads, head_dim %d, scale %s)",
        model_id, path, seconds, memory.backend(), memory.fmt(weights_bytes), shape.kv_layers,
        shape.n_kv_heads, shape.head_dim, shape.attention_scale,
    )
    return LoadedModel(model, tokenizer, path, model_id, config, shape, weights_bytes, seconds)
