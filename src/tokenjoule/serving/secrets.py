"""Keep credentials out of everything tokenjoule stores or prints.

- A server URL may carry credentials (`http://user:key@host`) or a query string
  (`?api_key=...`): `split_url` separates the bare base URL (the only form ever stored or
  printed) from the credentials and query parameters (sent, never stored).
- `--api-key` / `OPENAI_API_KEY` is sent as `Authorization: Bearer ...` and never stored.
- Server arguments that look like secrets (`--api-key X`, `--hf-token=X`, values such as
  `sk-...`) are redacted in the stored spec and provenance; the server still receives them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tokenjoule.errors import TokenjouleError

REDACTED = "<redacted>"
_SECRET_FLAG = re.compile(r"(key|token|secret|passw|auth|credential|cookie|bearer)", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"^(sk-|hf_|ghp_|gho_|github_pat_|xox[abp]-|eyJ)[A-Za-z0-9_\-.]{8,}|^Bearer\s", re.IGNORECASE)


@dataclass(frozen=True)
class ServerURL:
    base: str  # scheme://host[:port][/path], no credentials, no query, no fragment
    params: dict[str, str] = field(default_factory=dict)  # query parameters, sent with each request
    token: str | None = None  # the password (or lone user name) of the URL, used as a bearer token


def split_url(url: str) -> ServerURL:
    """The parts of a server URL; raises one line for a URL that is not http(s)://host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise TokenjouleError(f"--url is not a valid URL ({exc}); give http://HOST:PORT") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TokenjouleError("--url must look like http://HOST:PORT or https://HOST, got "
                              f"{redact_url(url)!r}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{port}" if port is not None else "")
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    token = parts.password or parts.username or None
    return ServerURL(base=base, params=dict(parse_qsl(parts.query, keep_blank_values=True)), token=token)


def redact_url(url: str) -> str:
    """`url` without credentials, query string or fragment (for storing and printing)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparseable url>"


def api_key_from(option: str | None) -> str | None:
    """--api-key, else OPENAI_API_KEY, else None. Never stored anywhere."""
    key = option if option is not None else os.environ.get("OPENAI_API_KEY")
    if key is not None and (not key.strip() or any(c in key for c in "\r\n\x00")):
        raise TokenjouleError("the API key is empty or contains a line break; check --api-key / OPENAI_API_KEY")
    return key.strip() if key else None


def looks_secret(value: str) -> bool:
    return bool(_SECRET_VALUE.search(value))


def redact_args(args: list[str]) -> list[str]:
    """A copy of command-line arguments with secret values replaced by REDACTED."""
    out: list[str] = []
    redact_next = False
    for arg in args:
        arg = str(arg)
        if redact_next and not arg.startswith("--"):
            out.append(REDACTED)
            redact_next = False
            continue
        redact_next = False
        if arg.startswith("-") and "=" in arg:
            flag, _, value = arg.partition("=")
            out.append(f"{flag}={REDACTED}" if _SECRET_FLAG.search(flag) or looks_secret(value) else arg)
        elif arg.startswith("-") and _SECRET_FLAG.search(arg):
            out.append(arg)
            redact_next = True
        elif looks_secret(arg) or "://" in arg and "@" in arg.split("://", 1)[1].split("/", 1)[0]:
            out.append(REDACTED if looks_secret(arg) else redact_url(arg))
        else:
            out.append(arg)
    return out


def secret_values(args: list[str], *extra: str | None) -> list[str]:
    """The values `redact_args` hides (plus `extra` ones: an API key, a URL token), longest
    first, so `scrub` can remove them from free text such as a server's log tail."""
    values = [v for v in extra if v]
    for original, shown in zip(args, redact_args(args)):
        if original != shown:
            values.append(original.partition("=")[2] if "=" in original and shown.endswith(REDACTED)
                          and original.startswith("-") else original)
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def scrub(text: str | None, secrets: list[str]) -> str | None:
    if not text:
        return text
    for value in secrets:
        text = text.replace(value, REDACTED)
    return text
