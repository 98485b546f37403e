"""`folio bench quality` on a tiny random model: the JSON keys, and the sanity of its numbers."""

import json

import pytest

from app.bench import quality
from app.cli import build_parser


def run_bench(capsys, *argv):
    args = build_parser().parse_args(["bench", "quality", *argv])
    code = quality.run(args)
    return code, capsys.readouterr().out


@pytest.fixture
def text(tmp_path):
    from model_factory import CORPUS

    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.py").write_text("\n".join(CORPUS[:50]))
    (folder / "b.py").write_text("\n".join(CORPUS[50:]))
    return folder


def test_json_has_one_object_per_mode(model_dir, text, capsys):
    code, out = run_bench(capsys, "--model", str(model_dir("llama")), "--text", str(text), "--context", "48",
                          "--windows", "2", "--chunk", "16", "--kv", "fp16", "int4", "k8g64v4g64", "mlx-lm-4bit",
                          "--json")
    assert code == 0
    result = json.loads(out)
    modes = {r["mode"]: r for r in result["results"]}
    assert list(modes) == ["fp16", "int4", "k8g64v4g64", "mlx-lm-4bit"]
    for r in modes.values():
        assert {"mode", "top1_agreement", "mean_kl", "ppl_fp16", "ppl", "bits_per_element"} <= set(r)
        assert 0.0 <= r["top1_agreement"] <= 1.0 and r["mean_kl"] >= -1e-6 and len(r["per_window"]) == 2
    # fp16 against itself: identical predictions.
    assert modes["fp16"]["top1_agreement"] == 1.0 and abs(modes["fp16"]["mean_kl"]) < 1e-6
    assert modes["int4"]["bits_per_element"] == pytest.approx(4.5)
    assert modes["k8g64v4g64"]["bits_per_element"] == pytest.approx(6.5)
    assert modes["mlx-lm-4bit"]["bits_per_element"] == pytest.approx(5.0)  # fp32 scales with fp32 weights
    assert modes["int4"]["mean_kl"] > 0  # the compressed cache does change something


def test_compressed_chunk_reads_more_error(model_dir, text, capsys):
    common = ["--model", str(model_dir("gemma3_text")), "--text", str(text), "--context", "64", "--windows", "1",
              "--chunk", "32", "--kv", "int4", "--json"]
    exact = json.loads(run_bench(capsys, *common)[1])["results"][0]
    compressed = json.loads(run_bench(capsys, *common, "--compressed-chunk")[1])
    assert compressed["exact_chunk"] is False
    assert compressed["results"][0]["mean_kl"] > exact["mean_kl"]


def test_decoding_reads_the_exact_tail(model_dir, text, capsys):
    # Token by token every step decodes: with the tail the newest tokens are read unquantized.
    from app.engine import kvcache

    common = ["--model", str(model_dir("llama")), "--text", str(text), "--context", "48", "--windows", "1",
              "--chunk", "1", "--kv", "int4", "--json"]
    kept = json.loads(run_bench(capsys, *common, "--tail", "64")[1])
    none = json.loads(run_bench(capsys, *common, "--tail", "0")[1])
    assert (kept["tail"], none["tail"]) == (64, 0) and kvcache.TAIL == 64  # the setting is put back
    assert kept["results"][0]["mean_kl"] < none["results"][0]["mean_kl"]


def test_bad_input_gets_one_line(model_dir, tmp_path, capsys):
    code, out = run_bench(capsys, "--model", str(model_dir("llama")), "--text", str(tmp_path / "nope"))
    assert code == 1 and "No text file or folder" in out
    short = tmp_path / "short.py"
    short.write_text("x = 1\n")
    code, out = run_bench(capsys, "--model", str(model_dir("llama")), "--text", str(short))
    assert code == 1 and "windows of 1,024 need" in out
    code, out = run_bench(capsys, "--model", str(model_dir("llama")), "--text", str(short), "--kv", "int3")
    assert code == 2 and "unknown KV mode" in out


@pytest.mark.reference_models
def test_int4_beats_mlx_lm_4bit_on_tiny_llama(reference_model_dir, capsys):
    import email
    import os

    held_out = os.path.join(os.path.dirname(os.path.dirname(email.__file__)), "json")
    code, out = run_bench(capsys, "--model", str(reference_model_dir / "tiny-llama"), "--text", held_out,
                          "--context", "512", "--windows", "1", "--kv", "int4", "mlx-lm-4bit", "--json")
    assert code == 0
    r = {x["mode"]: x for x in json.loads(out)["results"]}
    assert r["int4"]["bits_per_element"] < r["mlx-lm-4bit"]["bits_per_element"]
    assert r["int4"]["mean_kl"] < r["mlx-lm-4bit"]["mean_kl"]
