"""Keep secrets out of logs: query parameters and URLs are redacted before they are logged.

Headers are never logged at all, so Authorization, Cookie, Set-Cookie and API-key headers
cannot leak through the request or outbound log lines.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

import httpx

REDACTED = "[REDACTED]"

# Parameter names that carry credentials, matched case-insensitively as a whole name or as a
# suffix such as ``x_api_key`` or ``refresh-token``.
_SENSITIVE_NAME = re.compile(
    r"(^|[_-])(token|access[_-]?token|refresh[_-]?token|id[_-]?token|api[_-]?key|apikey|key|"
    r"secret|client[_-]?secret|password|passwd|pwd|auth|authorization|signature|sig|session|"
    r"sessionid|code|credential|credentials)$",
    re.IGNORECASE,
)
# Values that look like credentials whatever their name: JWTs and bearer strings.
_TOKEN_VALUE = re.compile(
    r"^(eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*|bearer\s.+|(sk|pk|ghp|gho|xox[abp])[_-][\w-]{8,})$",
    re.IGNORECASE,
)


def _is_sensitive(name: str, value: str) -> bool:
    return bool(_SENSITIVE_NAME.search(name) or _TOKEN_VALUE.match(value))


def redact_query(query: str) -> str:
    """Return ``query`` with the values of credential-like parameters replaced."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_is_sensitive(name, value) for name, value in pairs):
        return query
    return urlencode(
        [(name, REDACTED if _is_sensitive(name, value) else value) for name, value in pairs],
        safe="[]",
    )


def redact_url(url: httpx.URL) -> str:
    """Return ``url`` as a string without its password and with a redacted query."""
    if url.password:
        url = url.copy_with(username=url.username, password=REDACTED)
    query = url.query.decode("ascii", "replace")
    redacted = redact_query(query)
    if redacted != query:
        url = url.copy_with(query=redacted.encode("ascii"))
    return str(url)
