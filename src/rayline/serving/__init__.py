"""Online serving on Ray Serve. Public: ``runner`` (start, stop, the Service), ``config`` (spec ->
deployment options and topology), ``ports``; the deployments, the HTTP app, the page and the
ingress settings are private modules (``_server``, ``_composed``, ``_http``, ``_page``, ``_haproxy``).
"""
