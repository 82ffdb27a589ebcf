"""fleet: status, plan, update and report over many services rendered from this Copier template.

Run from a checkout as ``python -m fleet``, or install with ``uv tool install ./fleet``.
See docs/fleet.md.
"""

__version__ = "0.1.0"
