"""Running the app on uvicorn, with a graceful shutdown.

On SIGINT or SIGTERM uvicorn stops accepting connections, lets in-flight requests finish (up to
`graceful_timeout` seconds), then runs the app's lifespan shutdown, which drains the
micro-batcher's queue and stops its worker thread. A second signal exits at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertforge.errors import BertforgeError
from bertforge.serve.settings import LOOPBACK, ServeSettings


def require_serving() -> None:
    missing = []
    for name in ("fastapi", "uvicorn", "pydantic", "prometheus_client"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise BertforgeError(f"serving needs {', '.join(missing)}: pip install 'bertforge[serve]'")


def build_server(model_dir: str | Path, settings: ServeSettings):
    """The engine, the app and a uvicorn.Server for them (not started)."""
    require_serving()
    import uvicorn

    from bertforge.serve.app import create_app
    from bertforge.serve.engine import Engine

    engine = Engine(model_dir, backend=settings.backend, onnx_file=settings.onnx_file, device=settings.device,
                    threads=settings.threads, predict_batch_size=max(settings.batch_size, 1))
    app = create_app(engine, settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            timeout_graceful_shutdown=int(settings.graceful_timeout), access_log=False,
                            lifespan="on")
    return uvicorn.Server(config)


def serve(model_dir: str | Path, settings: ServeSettings) -> None:
    server = build_server(model_dir, settings)
    log = logging.getLogger("bertforge.serve")
    if settings.host not in LOOPBACK:
        log.warning("listening on %s: the server is reachable from other machines", settings.host)
    server.run()
