"""How the gateway starts and is reached: settings, composition root, HTTP app, server."""
