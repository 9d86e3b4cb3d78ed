"""The HTTP entrypoint: Litestar serves health, metrics and the schema; the object routes are a
raw ASGI mount.

    app.py      create_app: the Litestar app around the container's parts
    objects.py  PUT, GET, HEAD, DELETE and OPTIONS of /object/{id}, one method each
    headers.py  the grammar of the headers those routes read and write
    asgi.py     the ASGI messages of one exchange: the request body in, the answer out
    errors.py   every error answer: one body, and the one mapping from errors to statuses
    auth.py     with auth on, the check in front of every route (tokens, signed URLs)
    openapi.py  the object routes' part of the OpenAPI schema
"""
