"""How the gateway starts and is reached: settings, composition root, HTTP app, server, CLI.

container.py    the one composition root: everything the app and the CLI use
settings.py     every setting, from GATEWAY_* variables, with its default
lifespan.py     what runs while the app serves, and what is let go when it stops
http/           the Litestar app and the object routes
observability/  request IDs, metrics, access and JSON logs
edge.py         uvicorn's protocol with the edge limits (head size and time, connections)
main.py         serve(): the process, tuned
cli.py          object-gateway: serve, rebalance, or token, sign and signing-key (auth)
"""
