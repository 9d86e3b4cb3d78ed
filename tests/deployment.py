"""The deployment files as data: the socket proxy's allow-list, read as socket-proxy reads it.

wollomatic/socket-proxy compiles each ``-allow<METHOD>=regex`` as ``^`` + regex + ``$`` with Go's
regexp (whose ``$`` is the very end of the text) and matches it anywhere in the request's decoded
path, without the query (cmd/socket-proxy/handlehttprequest.go, internal/config/config.go).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
STACK_FILE = PROJECT_ROOT / "deploy" / "swarm" / "docker-stack.yml"
PROXY_SERVICE = "docker-socket-proxy"
_ALLOW_FLAG = re.compile(r"-+allow(GET|HEAD|POST|PUT|PATCH|DELETE|CONNECT|TRACE|OPTIONS)=(.*)")


def services(file: Path) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(file.read_text())["services"]
    return found


def allow_list(file: Path) -> dict[str, re.Pattern[str]]:
    """Each method the proxy lets through, with its path rule as socket-proxy compiles it."""
    rules = {}
    for argument in services(file)[PROXY_SERVICE]["command"]:
        flag = _ALLOW_FLAG.fullmatch(argument)
        if flag is not None:
            rules[flag.group(1)] = re.compile("^" + flag.group(2) + r"\Z")
    return rules


def lets_through(rules: dict[str, re.Pattern[str]], method: str, target: str) -> bool:
    rule = rules.get(method)
    return rule is not None and rule.search(unquote(target.partition("?")[0])) is not None
