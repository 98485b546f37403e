"""Fit estimate: KV shape from config.json matches the loaded model; bytes, verdicts, longest context."""

import json

import pytest

from app.hub import fit

GiB = 1024**3
LLAMA_8B = {"model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "hidden_size": 4096, "max_position_embeddings": 131072}


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3_text"])
def test_shape_from_config_matches_the_loaded_model(model_dir, arch):
    from app.engine import loader

    folder = model_dir(arch)
    config = json.loads((folder / "config.json").read_text())
    model, _ = loader.load_model(folder)
    probed = loader.probe_shape(model, config)
    shape = fit.shape_from_config(config)
    assert (shape.n_kv_heads, shape.head_dim, shape.windows, shape.max_context) == (
        probed.n_kv_heads, probed.head_dim, probed.windows, probed.max_context)


def test_layer_types_and_text_config_are_read():
    config = {"model_type": "x", "text_config": {
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
        "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention", "linear_attention", "full_attention"],
    }}
    shape = fit.shape_from_config(config)
    assert shape.windows == [128, None, None] and shape.n_kv_heads == 2 and shape.head_dim == 64


def test_bad_config_gives_one_line():
    with pytest.raises(fit.HubError, match="num_hidden_layers"):
        fit.shape_from_config({"model_type": "llama"})


def test_mode_costs_follow_the_cache_layouts():
    shape = fit.shape_from_config(LLAMA_8B)
    fp16 = fit.bytes_per_token(shape, "fp16")
    assert fp16 == 32 * 2 * 8 * 128 * 2  # layers * (K, V) * kv heads * head_dim * 2 bytes
    assert fit.bytes_per_token(shape, "int4") == pytest.approx(fp16 * 4.5 / 16, rel=0.02)
    assert fit.bytes_per_token(shape, "int4") <= fit.bytes_per_token(shape, "auto") <= fp16 * 6.5 / 16 + 1


def test_sliding_layers_stop_growing_at_their_window():
    config = {"num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
              "sliding_window": 512, "sliding_window_pattern": 6, "max_position_embeddings": 32768}
    shape = fit.shape_from_config(config)
    per_layer = 2 * 1 * 256 * 2
    assert fit.kv_bytes(shape, "fp16", 10_000) == per_layer * (5 * 512 + 10_000)


def test_estimate_on_a_16_gb_mac_shows_what_int4_buys():
    weights = 4_520_000_000
    total, budget = 16 * GiB, 12 * GiB
    est = fit.estimate(LLAMA_8B, weights, context=131072, total=total, budget=budget)
    usable = int(budget * 0.9)
    f16, i4 = est.mode("fp16"), est.mode("int4")
    assert f16.need_bytes == weights + 131072 * 131072 and f16.verdict == fit.WONT_FIT
    assert i4.verdict == fit.FITS
    assert f16.max_context == (usable - weights) // 131072
    assert i4.max_context == 131072  # capped at the model's own limit
    assert est.summary() == f"128K context with int4, {f16.max_context // 1024}K with fp16"
    # Past the working set but within physical memory is "tight".
    tight = fit.estimate(LLAMA_8B, weights, context=65536, total=total, budget=budget)
    assert tight.mode("fp16").verdict == fit.TIGHT


def test_weights_too_big_fit_nowhere():
    est = fit.estimate(LLAMA_8B, 40 * GiB, context=4096, total=16 * GiB, budget=12 * GiB)
    assert all(m.verdict == fit.WONT_FIT and m.max_context == 0 for m in est.modes)
    assert "weights alone" in est.summary()


def test_every_catalog_entry_gets_an_estimate():
    from app.hub import catalog

    entries = catalog.load()
    assert len(entries) >= 6 and all(e.repo_id.startswith("mlx-community/") for e in entries)
    for e in entries:
        est = fit.estimate(e.config, e.download_bytes, total=64 * GiB, budget=48 * GiB)
        assert est.model_max_context == e.context_length
        assert est.mode("int4").kv_bytes < est.mode("fp16").kv_bytes
