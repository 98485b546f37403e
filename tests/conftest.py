"""Test fixtures: FOLIO_HOME in a temporary dir always, Qt offscreen, tiny random models."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
# The oracles compare in float32; MLX would run it as TF32 on CUDA and M5 GPUs (as MLX's own tests pin).
os.environ["MLX_ENABLE_TF32"] = "0"
sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def folio_home(tmp_path, monkeypatch):
    home = tmp_path / "folio-home"
    monkeypatch.setenv("FOLIO_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return home


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """Build tiny random HF folders once per test session: model_dir('llama') -> Path."""
    from model_factory import make_model

    built = {}

    def get(arch="llama", **overrides):
        key = (arch, tuple(sorted(overrides.items())))
        if key not in built:
            built[key] = make_model(tmp_path_factory.mktemp(arch), arch, **overrides)
        return built[key]

    return get


@pytest.fixture
def model_copy(model_dir, tmp_path):
    """A writable copy of a tiny model folder, to break or import: model_copy("llama", "name") -> Path."""
    import shutil

    def copy(arch="llama", name="model"):
        dst = tmp_path / name
        shutil.copytree(model_dir(arch), dst)
        return dst

    return copy


def reference_models() -> Path | None:
    """../shared/models (tiny-llama, tiny-gemma) via FOLIO_REFERENCE_MODELS or beside the repo."""
    env = os.environ.get("FOLIO_REFERENCE_MODELS")
    path = Path(env) if env else ROOT.parent / "shared" / "models"
    return path if (path / "tiny-llama" / "config.json").exists() else None


@pytest.fixture
def reference_model_dir():
    path = reference_models()
    if path is None:
        pytest.skip("reference models not found: set FOLIO_REFERENCE_MODELS to ../shared/models")
    return path
