"""Keep secrets out of logs: query parameters and URLs are redacted before they are logged.

Headers are never logged at all, so Authorization, Cookie, Set-Cookie and API-key headers
cannot leak through the request or outbound log lines.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode

import httpx2

REDACTED = "[REDACTED]"

# Parameter names that carry credentials, matched case-insensitively as a whole name or as a
# suffix such as ``x_api_key`` or ``refresh-token``. The suffixes also cover the cloud storage
# presigned URLs: AWS SigV4 ``X-Amz-Credential``, ``X-Amz-Security-Token`` and
# ``X-Amz-Signature``, SigV2 ``Signature``, GCS ``X-Goog-Credential`` and ``X-Goog-Signature``,
# Azure SAS ``sig``; the access key ids of SigV2 (``AWSAccessKeyId``) and of GCS V2 signing
# (``GoogleAccessId``) are whole names of their own.
_SENSITIVE_NAME = re.compile(
    r"(^|[_-])(token|access[_-]?token|refresh[_-]?token|id[_-]?token|api[_-]?key|apikey|key|"
    r"secret|client[_-]?secret|password|passwd|pwd|auth|authorization|signature|sig|session|"
    r"sessionid|code|credential|credentials)$|^(awsaccesskeyid|googleaccessid)$",
    re.IGNORECASE,
)
# Values that look like credentials whatever their name: JWTs, bearer strings, common vendor
# token prefixes, AWS access key ids (AKIA long-term, ASIA temporary).
_TOKEN_VALUE = re.compile(
    r"^(eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*|bearer\s.+|(sk|pk|ghp|gho|xox[abp])[_-][\w-]{8,}|"
    r"(AKIA|ASIA)[A-Z0-9]{16})$",
    re.IGNORECASE,
)
# In free text (an exception message such as httpx's "... for url 'https://...'"): a URL's
# userinfo password, and each query parameter, up to a character that ends a URL in prose.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/?#@:'\"<>]*:)[^\s/?#@'\"<>]+@")
_QUERY_PAIR = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&;#\s'\"<>?]+)=(?P<value>[^&;#\s'\"<>]*)")


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


def redact_url(url: httpx2.URL) -> str:
    """Return ``url`` as a string without its password and with a redacted query."""
    if url.password:
        url = url.copy_with(username=url.username, password=REDACTED)
    query = url.query.decode("ascii", "replace")
    redacted = redact_query(query)
    if redacted != query:
        url = url.copy_with(query=redacted.encode("ascii"))
    return str(url)


def redact_text(text: str) -> str:
    """Return ``text`` with the secrets of every URL in it redacted: passwords, and the values
    of credential-like query parameters (percent-encoded or not). For text that may quote a URL,
    such as an exception message; a URL object goes through ``redact_url`` instead."""
    text = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)

    def pair(match: re.Match[str]) -> str:
        name, value = unquote(match["name"]), unquote(match["value"])
        if not _is_sensitive(name, value):
            return match[0]
        return f"{match['sep']}{match['name']}={REDACTED}"

    return _QUERY_PAIR.sub(pair, text)
