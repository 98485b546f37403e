"""Model loading: every way a folder can be wrong gives a message that names the problem."""

import json
import pytest

from app.engine import loader, memory
from app.engine.errors import ModelError, OutOfMemory


@pytest.fixture
def broken(model_copy):
    """A fresh copy of a good model folder to break."""
    return model_copy("llama")


def test_loads_a_good_folder_and_probes_its_shape(model_dir):
    m = loader.load(str(model_dir("gemma3_text")))
    assert m.shape.n_kv_heads == 1 and m.shape.head_dim == 128
    assert m.shape.windows == [32, 32, None]
    assert m.shape.attention_scale == 1.0
    assert m.weights_bytes > 0


def test_missing_folder():
    with pytest.raises(ModelError, match="No model folder"):
        loader.load("/nonexistent/model")


def test_repo_not_in_cache_never_downloads():
    with pytest.raises(ModelError, match="not downloaded.*folio models pull someone/model"):
        loader.load("someone/model")


def test_missing_config(broken):
    (broken / "config.json").unlink()
    with pytest.raises(ModelError, match="no config.json"):
        loader.load(str(broken))


def test_malformed_config(broken):
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        loader.load(str(broken))


def test_missing_weights(broken):
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weights"):
        loader.load(str(broken))


def test_missing_shard_named(broken):
    (broken / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(ModelError, match="model-00002-of-00002.safetensors"):
        loader.load(str(broken))


def test_missing_tokenizer(broken):
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="no tokenizer"):
        loader.load(str(broken))


def test_unsupported_architecture_is_named_with_the_supported_list(broken):
    cfg = json.loads((broken / "config.json").read_text())
    cfg["model_type"] = "transformer_xl_9000"
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="'transformer_xl_9000' is not supported. Supported: .*llama"):
        loader.load(str(broken))


def test_weights_that_do_not_match_the_config(broken):
    cfg = json.loads((broken / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="do not match its config.json"):
        loader.load(str(broken))


def test_memory_guard_gives_numbers_and_largest_context():
    with pytest.raises(OutOfMemory, match="largest context that fits in int4 is 1,000 tokens"):
        memory.check_fit(1_000_000, 1000.0, 5000, "int4", available=2_000_000)
    with pytest.raises(OutOfMemory, match="weights alone"):
        memory.check_fit(3_000_000, 1000.0, 10, "fp16", available=2_000_000)
    memory.check_fit(1_000_000, 1000.0, 1000, "fp16", available=2_000_000)


def test_loading_reports_progress_up_to_one(model_dir):
    seen = []
    m = loader.load(str(model_dir("qwen3")), on_progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3
    # Lazy loading then reading layer by layer gives the same model as a plain load.
    assert m.model.layers[0].self_attn.q_proj.weight.sum().item() == \
        loader.load(str(model_dir("qwen3"))).model.layers[0].self_attn.q_proj.weight.sum().item()
