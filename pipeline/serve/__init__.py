"""The HTTP service: ``settings`` (what it is told), ``service`` (models, batchers, stores), ``app`` (FastAPI
wiring), ``routes`` (the endpoints), ``schemas`` (request and answer models), ``errors``, ``guard`` (body limit,
API key, metrics labels from the router), ``metrics``; ``web/index.html`` is the search page.
"""
