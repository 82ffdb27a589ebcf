"""The service's tests. Before anything imports httpx: ``import httpx`` means httpx2 here.

respx (which mocks the shared client's pool in the unit tests) is written against ``httpx`` and
accepts only ``httpx``'s classes; the alias makes them httpx2's, the shared client's, so a test
hands respx an ``httpx2.Response`` and gets back what the service raises. Code that still says
``import httpx`` gets httpx2 too (docs: the upgrade to 0.3.0). pyproject.toml keeps respx's own
pytest plugin from importing httpx first.
"""

import httpx2

httpx2.alias_httpx()
