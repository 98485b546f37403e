"""Downloads from a local Hub: complete, resumed, corrupted, server gone, disk full, pause/cancel."""

import errno
import os
import time

import pytest
from hub_server import HubServer, point_hub_at

from app.hub import download, installed, net
from app.hub.errors import DiskFull, DownloadCancelled, HubError, IntegrityError, Offline, Paused

REPO = "mlx-community/tiny-llama-4bit"


@pytest.fixture
def repo_folder(model_dir):
    return model_dir("llama")


@pytest.fixture
def hub(monkeypatch, repo_folder):
    with HubServer({REPO: repo_folder}) as server:
        point_hub_at(monkeypatch, server)
        yield server


def snapshot_matches(snapshot, folder):
    names = sorted(p.name for p in folder.iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == names
    for n in names:
        assert (snapshot / n).read_bytes() == (folder / n).read_bytes()


def test_complete_download_installs_verified_files(hub, repo_folder):
    seen = []
    snapshot = download.pull(REPO, on_progress=seen.append)
    snapshot_matches(snapshot, repo_folder)
    root = net.hub_cache() / download.repo_folder(REPO)
    assert (root / "refs" / "main").read_text() == hub.repos[REPO].commit
    assert not list(root.glob("blobs/*.incomplete"))
    assert seen[-1].done_bytes == seen[-1].total_bytes == sum(p.stat().st_size for p in repo_folder.iterdir())
    assert seen[-1].eta_s == 0.0
    assert download.pending() == []
    models = installed.hub_models()
    assert [m.name for m in models] == [REPO] and models[0].problem == ""
    assert models[0].weights_bytes == (repo_folder / "model.safetensors").stat().st_size
    # One GET per file (large ones from the CDN), nothing fetched twice.
    gets = [r for r in hub.requests if r[0] == "GET" and ("/resolve/" in r[1] or r[1].startswith("/cdn/"))]
    assert len(gets) == len(list(repo_folder.iterdir()))
    assert hub.cdn_auth == [False]


def test_a_token_goes_to_the_hub_but_never_to_the_cdn(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    download.pull(REPO)
    assert hub.cdn_auth == [False]


def test_installed_snapshot_is_what_huggingface_hub_finds(hub, monkeypatch):
    from huggingface_hub import constants, snapshot_download

    snapshot = download.pull(REPO)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(net.hub_cache()))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert os.path.samefile(snapshot_download(REPO, local_files_only=True), snapshot)


def test_dropped_connection_resumes_with_a_range_request(hub, repo_folder):
    size = (repo_folder / "model.safetensors").stat().st_size
    hub.drop_after["model.safetensors"] = size // 3
    snapshot = download.pull(REPO)
    snapshot_matches(snapshot, repo_folder)
    ranges = [r[2] for r in hub.requests if r[0] == "GET" and r[1].endswith("model.safetensors")]
    # The retry asks only for what had not arrived.
    assert ranges[0] is None and len(ranges) == 2
    assert 0 < int(ranges[1].split("=")[1].rstrip("-")) <= size // 3


def test_corrupted_file_is_rejected_and_deleted(hub, repo_folder):
    hub.corrupt.add("model.safetensors")
    with pytest.raises(IntegrityError, match="model.safetensors.*integrity"):
        download.pull(REPO)
    root = net.hub_cache() / download.repo_folder(REPO)
    assert not (root / "refs" / "main").exists()
    assert not list(root.glob("blobs/*.incomplete"))
    assert installed.hub_models() == []
    assert download.pending()[0]["state"] == "failed"
    hub.corrupt.clear()
    snapshot_matches(download.pull(REPO), repo_folder)


def test_server_going_away_keeps_partial_and_resume_after_restart_finishes(hub, repo_folder, monkeypatch):
    size = (repo_folder / "model.safetensors").stat().st_size
    hub.die_after["model.safetensors"] = size // 2
    with pytest.raises(Offline, match="Lost the connection.*Resume"):
        download.pull(REPO)
    assert installed.hub_models() == []
    [p] = download.pending()
    partial = next((net.hub_cache() / download.repo_folder(REPO)).glob("blobs/*.incomplete")).stat().st_size
    assert 0 < partial <= size // 2
    assert p["repo_id"] == REPO and p["state"] == "failed" and 0 < p["done_bytes"] < p["total_bytes"]
    # A new process (no shared state but the files) resumes from where the old one stopped.
    hub.stop()
    with HubServer({REPO: repo_folder}, port=hub.port) as again:
        point_hub_at(monkeypatch, again)
        snapshot_matches(download.pull(REPO), repo_folder)
        ranges = [r[2] for r in again.requests if r[0] == "GET" and r[1].endswith("model.safetensors")]
        assert ranges == [f"bytes={partial}-"]
    assert download.pending() == []


def test_full_disk_is_refused_before_downloading(hub, monkeypatch):
    monkeypatch.setattr(download, "free_bytes", lambda path: 10_000)
    with pytest.raises(DiskFull, match="Not enough disk space"):
        download.pull(REPO)
    assert not any(r[0] == "GET" and ("/resolve/" in r[1] or r[1].startswith("/cdn/")) for r in hub.requests)


def test_disk_filling_up_mid_download_keeps_what_was_written(hub, repo_folder, monkeypatch):
    written = {"n": 0}

    def append(out, chunk):
        if written["n"] > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        out.write(chunk)
        written["n"] += len(chunk)

    hub.throttle = 0.001
    monkeypatch.setattr(download, "CHUNK", 65536)
    monkeypatch.setattr(download, "_append", append)
    with pytest.raises(DiskFull, match="disk filled up"):
        download.pull(REPO)
    assert download.pending()[0]["done_bytes"] > 0
    monkeypatch.setattr(download, "_append", lambda out, chunk: out.write(chunk))
    snapshot_matches(download.pull(REPO), repo_folder)


def test_pause_then_resume_and_cancel(hub, repo_folder):
    hub.throttle = 0.01
    control = download.Control()

    def on_progress(p):
        if p.done_bytes > 100_000:
            control.pause()

    with pytest.raises(Paused):
        download.pull(REPO, on_progress=on_progress, control=control)
    [p] = download.pending()
    assert p["state"] == "paused" and p["done_bytes"] > 0
    cancel = download.Control()
    cancel.cancel()
    with pytest.raises(DownloadCancelled):
        download.pull(REPO, control=cancel)
    assert download.pending() == []
    assert not (net.hub_cache() / download.repo_folder(REPO)).exists()


def test_one_repo_downloads_once_at_a_time(hub):
    import threading

    hub.throttle = 0.01
    control = download.Control()
    errors = []
    first = threading.Thread(target=lambda: errors.append(_try(download.pull, REPO, control=control)))
    first.start()
    deadline = time.monotonic() + 10
    while not download.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(HubError, match="already downloading"):
        download.pull(REPO)
    control.pause()
    first.join()
    assert isinstance(errors[0], Paused)


def _try(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:
        return e


def test_unknown_repo_and_offline_give_one_line(hub, monkeypatch):
    with pytest.raises(HubError, match="no model mlx-community/nope"):
        download.pull("mlx-community/nope")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(Offline, match="HF_HUB_OFFLINE"):
        download.pull(REPO)
    assert hub.requests == [r for r in hub.requests if "nope" in r[1]]


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    from huggingface_hub import constants

    with HubServer({}) as server:
        url = server.url
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(Offline, match="Cannot reach 127.0.0.1"):
        download.pull(REPO)
