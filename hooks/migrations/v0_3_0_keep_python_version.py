"""Copier migration for 0.3.0, run before the update renders (needs --trust).

0.3.0 added the question ``python_version`` (3.11, 3.12 or 3.13, default 3.13). Every service
rendered before it runs on Python 3.11, and its answers file has no ``python_version``: without
this script, ``copier update --defaults`` would answer the new question with its default and move
the service to 3.13 (base image, requires-python, ruff's and mypy's target, CI) as a side effect
of a template update.

So, before Copier reads the answers again, record ``python_version: '3.11'`` in the answers file:
the service stays on the Python it was built and tested on. Moving it is a decision of its own,
``copier update --data python_version=3.13``, which wins over this recorded answer
(docs/upgrading.md).

Cases:
- no ``python_version`` in the answers file: ``'3.11'`` is recorded;
- one is there (the service was rendered from a template that asked): nothing to do.

It runs in the project's root, edits only the answers file (Copier rewrites it after the update),
never commits, and never touches the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

QUESTION = "python_version"
# The only Python the template supported before it asked.
VERSION_BEFORE_THE_QUESTION = "3.11"


def main(answers_file: Path) -> int:
    # Copier passes the versions crossed, e.g. 0.2.0 -> 0.3.0.
    versions = "{} -> {}".format(
        os.environ.get("VERSION_PEP440_FROM", "?"), os.environ.get("VERSION_PEP440_TO", "?")
    )
    text = answers_file.read_text()
    answers = yaml.safe_load(text) or {}
    if QUESTION in answers:
        return 0
    separator = "" if text.endswith("\n") else "\n"
    answers_file.write_text(f"{text}{separator}{QUESTION}: '{VERSION_BEFORE_THE_QUESTION}'\n")
    print(
        f"migration 0.3.0 ({versions}): recorded {QUESTION}={VERSION_BEFORE_THE_QUESTION}, the "
        f"Python this service was built on; move it with --data {QUESTION}=3.13 "
        "(docs/upgrading.md)."
    )
    return 0


if __name__ == "__main__":
    # copier.yml passes the answers file's path (relative to the project's root).
    sys.exit(main(Path(sys.argv[1])))
