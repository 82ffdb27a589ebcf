"""For mypy, httpcore is httpcore2, as it is when the tests run (see typings/httpx)."""

from httpcore2 import *  # noqa: F403
