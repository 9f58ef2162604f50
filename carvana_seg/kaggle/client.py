"""Kaggle's KaggleApi for the Carvana competition: importing and authenticating it, and turning the
failures a user can fix (no package, no credentials, rules not accepted, no network) into DownloadError."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any, Protocol

COMPETITION = "carvana-image-masking-challenge"
RULES_URL = f"https://www.kaggle.com/c/{COMPETITION}/rules"
TOKEN_URL = "https://www.kaggle.com/settings/api"
INSTALL_HINT = "pip install -e '.[kaggle]'"


class DownloadError(Exception):
    """An expected failure (no kaggle package, no credentials, no network, wrong data) with its fix."""


class KaggleApiLike(Protocol):
    """The two calls of kaggle's KaggleApi that the download uses (tests pass a fake)."""

    def competition_list_files(self, competition: str) -> Any: ...

    def competition_download_file(
        self,
        competition: str,
        file_name: str,
        path: str | None = None,
        force: bool = False,
        quiet: bool = False,
    ) -> None: ...


def kaggle_api() -> KaggleApiLike:
    """Import and authenticate kaggle's KaggleApi; any failure becomes a DownloadError with the fix.
    kaggle's warnings (e.g. that the API key file is readable by other users) are passed on to stderr."""
    noise = io.StringIO()  # kaggle prints its own (CLI-oriented) help; ours replaces it
    try:
        # Importing any kaggle module runs kaggle/__init__.py, which authenticates at import time:
        # 1.6-1.7 raise OSError, 1.8 calls exit(1), 2.x swallows the failure and we meet it below.
        with contextlib.redirect_stdout(noise):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            # 2.x: no credentials -> exit(1); an access token is checked online -> requests' ConnectionError.
            api.authenticate()
    except ImportError as err:
        if importlib.util.find_spec("kaggle") is None:
            raise DownloadError(
                "the optional dependency 'kaggle' is not installed. Install it with:\n"
                f"  {INSTALL_HINT}\n(or: pip install kaggle six)"
            ) from None
        # kaggle 2.2.x imports `six` without declaring it, so a bare `pip install kaggle` can land here.
        name = getattr(err, "name", None) or ""
        missing = f" (pip install {name})" if name and not name.startswith("kaggle") else ""
        raise DownloadError(
            f"the kaggle package is installed but cannot be imported: {err}. "
            f"Install what it is missing{missing}, or reinstall the extra: {INSTALL_HINT}"
        ) from None
    except (Exception, SystemExit) as err:
        if _is_network_error(err):
            raise DownloadError(_network_message(err)) from None
        # kaggle 1.x's "Could not find kaggle.json" names only its fallback folder; the help below is clearer.
        quiet = isinstance(err, SystemExit) or "kaggle.json" in str(err)
        detail = "" if quiet else f" (kaggle said: {_first_line(err)})"
        message = f"no usable Kaggle credentials were found{detail}.\n{credentials_help()}"
        raise DownloadError(message) from None
    finally:
        relay_warnings(noise.getvalue())
    return api


def relay_warnings(printed: str) -> None:
    """Show on stderr, once each, the "Warning: ..." lines among what kaggle printed while its help text
    was being kept off the screen: kaggle says so when ~/.kaggle/kaggle.json is readable by other users."""
    shown: set[str] = set()
    for line in printed.splitlines():
        text = line.strip()
        if not text.lower().startswith("warning:") or text in shown:
            continue
        shown.add(text)
        print(f"warning: {text[len('warning:') :].strip()}", file=sys.stderr, flush=True)


def call_api(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the Kaggle API, turning the failures a user can fix into DownloadError."""
    try:
        return fn(*args, **kwargs)
    except DownloadError:
        raise
    except Exception as err:
        mapped = _api_error(err, what)
        if mapped is None:
            raise  # a bug, here or in kaggle: keep the traceback
        raise mapped from None


def credentials_help() -> str:
    """How to give the installed kaggle package credentials, and the rules step everyone forgets."""
    version = _kaggle_version()
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR")
    json_path = f"{config_dir}/kaggle.json" if config_dir else "~/.kaggle/kaggle.json"
    why = " (KAGGLE_CONFIG_DIR is set)" if config_dir else ""
    lines = [
        "To download the Carvana data:",
        f"  1. Sign in to kaggle.com, open {RULES_URL}",
        "     and accept the competition rules (until you do, Kaggle answers 403 Forbidden).",
        f"  2. Give the kaggle package your credentials ({TOKEN_URL} makes them), one of:",
        f"     - the legacy API key file kaggle.json: save it as {json_path}{why}",
        f"       and run: chmod 600 {json_path}",
        "     - or the environment variables KAGGLE_USERNAME and KAGGLE_KEY (the two fields of kaggle.json)",
    ]
    # Access tokens (KAGGLE_API_TOKEN, ~/.kaggle/access_token) arrived in kaggle 1.8.0.
    if version is not None and version >= (1, 8):
        lines.append(
            "     - or an API token: export KAGGLE_API_TOKEN=<token>, or save it in ~/.kaggle/access_token"
        )
    return "\n".join(lines)


def _kaggle_version() -> tuple[int, ...] | None:
    try:
        text = metadata.version("kaggle")
    except metadata.PackageNotFoundError:
        return None
    parts: list[int] = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


# --- failed calls ------------------------------------------------------------------------------------


def _api_error(err: Exception, what: str) -> DownloadError | None:
    """The DownloadError for a failed Kaggle API call, or None when the failure is not one we expect."""
    status = _http_status(err)
    if status == 403:
        return DownloadError(
            f"Kaggle refused {what} (403 Forbidden): the Kaggle account of your credentials has not accepted "
            f"the competition rules.\nSign in, open {RULES_URL}, accept the rules, "
            "and run the same command again."
        )
    if status == 401:
        return DownloadError(
            f"Kaggle rejected your credentials (401 Unauthorized) while fetching {what}: the key or token is "
            f"wrong or expired.\n{credentials_help()}"
        )
    if status == 429:
        return DownloadError(
            f"Kaggle is rate-limiting this account (429) while fetching {what}; retry later."
        )
    if status is not None:
        return DownloadError(f"Kaggle answered HTTP {status} while fetching {what}: {_first_line(err)}")
    if _is_network_error(err):
        return DownloadError(_network_message(err))
    return None


def _http_status(err: BaseException) -> int | None:
    # kaggle >= 1.7 raises requests' HTTPError (status on .response); 1.6 had its own ApiException (.status).
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status is None:
        status = getattr(err, "status", None)
    return status if isinstance(status, int) else None


# Matched by name so that this module needs neither requests nor urllib3 to be importable.
_NETWORK_ERRORS = {
    "ConnectionError",
    "Timeout",
    "TimeoutError",
    "MaxRetryError",
    "NewConnectionError",
    "NameResolutionError",
    "ProtocolError",
    "SSLError",
    "gaierror",
}


def _is_network_error(err: BaseException) -> bool:
    return any(cls.__name__ in _NETWORK_ERRORS for cls in type(err).__mro__)


def _network_message(err: BaseException) -> str:
    return (
        f"could not reach Kaggle ({type(err).__name__}: {_first_line(err)}).\n"
        "Check the internet connection (behind a proxy, set HTTPS_PROXY) and run the same command again."
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
