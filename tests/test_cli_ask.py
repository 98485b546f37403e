"""`folio ask`: streamed text on stdout, stats on stderr, one JSON object with --json."""

import json
import subprocess
import sys

from app.cli import main


def test_ask_json_has_text_and_every_stat(model_dir, capsys):
    rc = main(["ask", "--model", str(model_dir("llama")), "--temperature", "0", "--max-tokens", "8", "--json", "hi"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("text", "prompt_tokens", "generated_tokens", "ttft_s", "prefill_tps", "decode_tps",
                "peak_memory_bytes", "kv_bytes", "kv_bytes_fp16", "context_limit", "backend", "cached_tokens",
                "rss_bytes", "context_used"):
        assert key in out, key
    assert out["generated_tokens"] > 0


def test_ask_streams_text_and_prints_stats_to_stderr(model_dir, capsys):
    rc = main(["ask", "--model", str(model_dir("llama")), "--temperature", "0", "--max-tokens", "8", "hi"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "prompt tokens" in captured.err and "decode" in captured.err


def test_bad_model_is_one_line_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "app", "ask", "--model", str(tmp_path / "nope"), "hi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("folio: No model folder")


def test_prompt_over_context_exits_nonzero(model_dir, capsys):
    rc = main(["ask", "--model", str(model_dir("llama")), "--context", "8", "word " * 30])
    assert rc == 1
    assert "over the context limit of 8" in capsys.readouterr().err


def test_ctrl_c_stops_the_answer_cleanly(model_dir):
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "ask", "--model", str(model_dir("llama")), "--temperature", "0",
         "--max-tokens", "3000", "hi"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    proc.stdout.read(1)  # the answer has started streaming
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped" in err or "stop]" in err
