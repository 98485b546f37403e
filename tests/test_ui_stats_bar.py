"""The stats bar reads like a sentence: the KV cache's size, its policy and bits, and what that saves."""

from app.ui.stats_bar import StatsBar, kv_summary


def test_the_kv_cache_reads_as_size_policy_bits_and_saving(qtbot):
    auto = {"kv_bytes": 1_234_567, "kv_policy": "auto (K 8b/g128+rot V 4b/g64+rot)", "kv_bits_per_element": 6.4, "kv_compression": 2.5}
    assert kv_summary(auto) == "KV 1.2 MB · auto 6.4 bit · 2.5× smaller than fp16"
    assert kv_summary({"kv_bytes": 3_100_000, "kv_policy": "fp16", "kv_bits_per_element": 16.0,
                       "kv_compression": 1.0}) == "KV 3.1 MB · fp16"
    bar = StatsBar()
    qtbot.addWidget(bar)
    bar.set_stats({**auto, "context_used": 1200, "context_limit": 4096, "backend": "cpu"})
    assert bar.text("kv") == kv_summary(auto) and "K 8b/g128" in bar.labels["kv"].toolTip()
    assert bar.text("context") == "1,200 / 4,096"
    assert bar.context.value() == 1200 and bar.text("backend") == "cpu"
