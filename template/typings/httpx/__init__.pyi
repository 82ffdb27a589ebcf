"""For mypy, httpx is httpx2, as it is when the tests run (httpx2.alias_httpx() in
tests/__init__.py): respx's annotations name httpx's classes, and the tests hand it httpx2's."""

from httpx2 import *  # noqa: F403
