"""The platform: the outbound chain, resilience, logging, tracing, metrics, errors and probes.

Template-owned: `copier update` maintains every module here, and `make lint` reports local
edits (see ``.template-ownership.yml``). Change behaviour through the extension points instead:
``service.configure`` (routers, middleware, handlers, readiness checks, resources),
``settings.Settings`` (your settings, per-downstream ``retry``/``breaker``) and the environment.
"""
