"""Installed models: HF cache scan, importing folders (validated), removing, the catalog file."""

import json
import shutil

import pytest
from hub_server import HubServer, point_hub_at

from app.engine.errors import ModelError
from app.hub import catalog, download, installed, net
from app.hub.errors import HubError
from app.settings import Settings

REPO = "mlx-community/tiny-qwen3-4bit"


@pytest.fixture
def folder(model_copy):
    return model_copy("qwen3", "my-model")


def test_import_validates_and_remembers_the_folder(folder):
    m = installed.import_folder(folder)
    assert m.problem == "" and m.weights_bytes == (folder / "model.safetensors").stat().st_size
    assert Settings().imported_models == [str(folder.resolve())]
    installed.import_folder(folder)  # twice is still once
    [listed] = installed.list_models()
    assert listed.name == str(folder.resolve()) and listed.source == "imported" and listed.config["model_type"] == "qwen3"


@pytest.mark.parametrize("missing, message", [
    ("config.json", "no config.json"),
    ("model.safetensors", "no weights"),
    ("tokenizer.json", "no tokenizer"),
])
def test_import_names_what_is_missing(folder, missing, message):
    (folder / missing).unlink()
    with pytest.raises(ModelError, match=message):
        installed.import_folder(folder)
    assert Settings().imported_models == []


def test_import_of_nothing_or_a_file(tmp_path, folder):
    with pytest.raises(HubError, match="no folder"):
        installed.import_folder(tmp_path / "nope")
    with pytest.raises(HubError, match="is a file"):
        installed.import_folder(folder / "config.json")


def test_removing_an_imported_model_keeps_its_folder(folder):
    installed.import_folder(folder)
    assert "left untouched" in installed.remove("my-model")
    assert folder.exists() and installed.list_models() == []
    with pytest.raises(HubError, match="No installed model called my-model"):
        installed.remove("my-model")


def test_a_moved_imported_folder_is_listed_with_the_problem(folder):
    installed.import_folder(folder)
    shutil.rmtree(folder)
    [m] = installed.list_models()
    assert "is gone" in m.problem


def test_downloaded_model_is_listed_and_removed(monkeypatch, model_dir):
    with HubServer({REPO: model_dir("qwen3")}) as hub:
        point_hub_at(monkeypatch, hub)
        download.pull(REPO)
    [m] = installed.hub_models()
    assert m.name == REPO and m.source == "hub" and m.size_bytes > m.weights_bytes > 0
    assert "freed" in installed.remove(REPO)
    assert not (net.hub_cache() / download.repo_folder(REPO)).exists()
    assert installed.list_models() == []


def test_unfinished_download_is_not_installed_and_rm_drops_it(monkeypatch, model_dir):
    with HubServer({REPO: model_dir("qwen3")}) as hub:
        point_hub_at(monkeypatch, hub)
        hub.die_after["model.safetensors"] = 200_000
        with pytest.raises(HubError):
            download.pull(REPO)
    assert installed.hub_models() == [] and len(download.pending()) == 1
    assert "Cancelled the unfinished download" in installed.remove(REPO)
    assert download.pending() == [] and not (net.hub_cache() / download.repo_folder(REPO)).exists()


def test_catalog_problems_are_one_line(tmp_path):
    bad = tmp_path / "catalog.json"
    bad.write_text("{not json")
    with pytest.raises(HubError, match="cannot be read"):
        catalog.load(bad)
    bad.write_text(json.dumps({"models": [{"repo_id": "a/b"}]}))
    with pytest.raises(HubError, match="entry 1 .* lacks name"):
        catalog.load(bad)
    assert catalog.find("MLX-COMMUNITY/qwen3-8b-4bit").name == "Qwen3 8B"
