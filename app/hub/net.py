"""Where the Hub is and how Folio talks to it: endpoint, cache folder, timeouts, error messages.

The endpoint and cache are read from the environment on every call, not at import, so the
app's settings and the tests can point them elsewhere after huggingface_hub is loaded.
"""

import contextlib
import os
from pathlib import Path

from app.hub.errors import HubError, Offline

DEFAULT_ENDPOINT = "https://huggingface.co"
# Seconds to wait for a connection and for each read; a dead network fails, it never hangs.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def hub_cache() -> Path:
    """The Hugging Face cache folder mlx-lm and huggingface_hub share (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        home = Path(xdg) / "huggingface"
    return Path(home).expanduser() / "hub"


def timeout():
    import httpx2

    return httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)


def ensure_online():
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise Offline(
            "Folio is set to work offline (HF_HUB_OFFLINE is set), so it cannot search or download. "
            "Unset HF_HUB_OFFLINE to use the Hugging Face Hub."
        )


def api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


@contextlib.contextmanager
def talking_to_hub(what: str, repo_id: str | None = None):
    """Turn network and Hub failures into one line a person can act on."""
    import httpx2
    from huggingface_hub import errors as hf

    host = endpoint().split("://")[-1]
    try:
        yield
    except hf.OfflineModeIsEnabled:
        ensure_online()
        raise
    except hf.GatedRepoError:
        raise HubError(f"{repo_id} is gated: accept its license on huggingface.co and log in with `hf auth login`.") from None
    except hf.RepositoryNotFoundError:
        raise HubError(f"There is no model {repo_id} on the Hub (or it is private).") from None
    except hf.RevisionNotFoundError:
        raise HubError(f"{repo_id} has no such revision on the Hub.") from None
    except hf.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise HubError(f"The Hub answered {status} while {what}; try again later.") from None
    except httpx2.TimeoutException:
        raise Offline(f"{host} did not answer in time while {what}. Check your internet connection and try again.") from None
    except (httpx2.TransportError, ConnectionError):
        raise Offline(f"Cannot reach {host} while {what}. Check your internet connection and try again.") from None
