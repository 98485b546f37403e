"""`folio models ...` end to end against the local Hub: search, pull, list, rm, import, errors."""

import json
import shutil

import pytest
from hub_server import HubServer, point_hub_at

from app import cli

REPO = "mlx-community/tiny-llama-4bit"


@pytest.fixture
def hub(monkeypatch, model_dir):
    with HubServer({REPO: model_dir("llama"), "someone/tiny-gemma": model_dir("gemma3_text")}) as server:
        point_hub_at(monkeypatch, server)
        yield server


def folio(capsys, *argv):
    rc = cli.main(["models", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_search_pull_list_rm(hub, capsys):
    rc, out, _ = folio(capsys, "search", "tiny", "--json")
    assert rc == 0 and {r["repo_id"] for r in json.loads(out)} == {REPO, "someone/tiny-gemma"}
    assert json.loads(out)[0]["quantization"] == "4-bit"
    rc, out, _ = folio(capsys, "search", "llama")
    assert rc == 0 and REPO in out and "gemma" not in out

    rc, out, err = folio(capsys, "pull", REPO)
    assert rc == 0 and f"Installed {REPO}" in out and "100%" in err

    rc, out, _ = folio(capsys, "list", "--json", "--context", "1024")
    [m] = json.loads(out)["installed"]
    assert m["name"] == REPO and m["problem"] == ""
    assert [x["mode"] for x in m["fit"]["modes"]] == ["fp16", "int4", "auto"] and m["fit"]["context"] == 1024
    rc, out, _ = folio(capsys, "list")
    assert REPO in out and "fits" in out

    rc, out, _ = folio(capsys, "rm", REPO, "--json")
    assert rc == 0 and "freed" in json.loads(out)["message"]
    rc, out, _ = folio(capsys, "list")
    assert "No models installed" in out


def test_fit_of_a_hub_model_downloads_nothing(hub, capsys, model_dir):
    rc, out, _ = folio(capsys, "fit", REPO, "--context", "2048", "--json")
    r = json.loads(out)
    assert rc == 0 and r["weights_bytes"] == sum(f.stat().st_size for f in model_dir("llama").glob("model*.safetensors"))
    assert [m["mode"] for m in r["fit"]["modes"]] == ["fp16", "int4", "auto"] and r["fit"]["context"] == 2048
    rc, out, _ = folio(capsys, "fit", REPO)
    assert rc == 0 and REPO in out and "fits" in out
    rc, out, _ = folio(capsys, "list", "--json")
    assert json.loads(out)["installed"] == []  # nothing was downloaded
    rc, _, err = folio(capsys, "fit", "mlx-community/missing")
    assert rc == 1 and "There is no model mlx-community/missing" in err


def _gguf_repo(folder, model_dir):
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF" + bytes(64))
    (folder / "README.md").write_text("not mlx")


def _broken_config_repo(folder, model_dir):
    shutil.copytree(model_dir("llama"), folder)
    (folder / "config.json").write_text("{not json")


@pytest.mark.parametrize("make,message", [(_gguf_repo, "not a model Folio can run"),
                                          (_broken_config_repo, "config.json is not valid JSON")])
def test_fit_explains_a_repo_it_cannot_estimate(capsys, monkeypatch, tmp_path, model_dir, make, message):
    make(tmp_path / "repo", model_dir)
    with HubServer({"someone/repo": tmp_path / "repo"}) as server:
        point_hub_at(monkeypatch, server)
        rc, _, err = folio(capsys, "fit", "someone/repo")
    assert rc == 1 and message in err


def test_errors_are_one_line(hub, capsys, monkeypatch, tmp_path):
    rc, _, err = folio(capsys, "pull", "mlx-community/missing")
    assert rc == 1 and err.strip() == "folio: There is no model mlx-community/missing on the Hub (or it is private)."
    rc, out, _ = folio(capsys, "import", str(tmp_path), "--json")
    assert rc == 1 and "no config.json" in json.loads(out)["error"]
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    rc, _, err = folio(capsys, "search", "tiny")
    assert rc == 1 and "offline" in err and "Traceback" not in err


def test_search_that_gets_no_answer_times_out(hub, capsys, monkeypatch):
    from app.hub import net

    hub.stall = True
    monkeypatch.setattr(net, "READ_TIMEOUT", 0.3)
    rc, _, err = folio(capsys, "search", "tiny")
    assert rc == 1 and "did not answer in time" in err


def test_catalog_listing(capsys):
    rc, out, _ = folio(capsys, "list", "--catalog", "--json")
    entries = json.loads(out)["catalog"]
    assert rc == 0 and len(entries) >= 6
    assert all(e["fit"]["modes"][0]["mode"] == "fp16" for e in entries)
