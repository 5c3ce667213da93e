"""`tradecast serve`: prepare the API key, then run the service with a real `bentoml serve` (exec'd)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

SERVICE_TARGET = "serving.service:TradecastService"
SERVICE_NAME = "tradecast"


def serve_command(port: int, host: str, workers: int, config: Optional[Path] = None,
                  access_log: bool = True) -> tuple[list[str], dict[str, str]]:
    """The `bentoml serve` command line and environment for the service (pure, for tests)."""
    from tradecast.paths import PROJECT_ROOT

    env = dict(os.environ)
    overrides = json.loads(env.get("BENTOML_CONFIG_OVERRIDES") or "{}")
    service = overrides.setdefault("services", {}).setdefault(SERVICE_NAME, {})
    service["workers"] = workers
    service.setdefault("logging", {}).setdefault("access", {})["enabled"] = access_log
    env["BENTOML_CONFIG_OVERRIDES"] = json.dumps(overrides)
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")  # no usage analytics calls from a server
    # one request = a few small predictions: OpenMP thread pools per worker only contend (13 ms -> 0.1 ms
    # per LightGBM call on a loaded 2-core box); scale with --workers instead
    env.setdefault("OMP_NUM_THREADS", "1")
    if config is not None:
        env["TRADECAST_SERVING_CONFIG"] = str(Path(config).resolve())
    paths = [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    cmd = [sys.executable, "-m", "bentoml", "serve", SERVICE_TARGET, "--host", host, "--port", str(port),
           "--working-dir", str(PROJECT_ROOT)]
    return cmd, env


def serve(
    port: Optional[int] = typer.Option(None, help="Port to listen on (default from configs/serving.yaml: 3000)."),
    workers: Optional[int] = typer.Option(None, help="API worker processes (default from configs/serving.yaml)."),
    host: Optional[str] = typer.Option(None, help="Address to bind (default 127.0.0.1; 0.0.0.0 for all)."),
    config: Optional[Path] = typer.Option(None, help="Serving config file (default configs/serving.yaml)."),
) -> None:
    """Serve the prediction endpoints (BentoML) with each family's champion model."""
    from tradecast.cli import run_guarded

    def _prepare():
        from serving.auth import API_KEY_ENV, resolve_api_key
        from serving.loading import load_serving_config

        cfg = load_serving_config(config)
        _key, path = resolve_api_key(create=True)
        where = f"${API_KEY_ENV}" if path is None else f"{path} (mode 0600)"
        typer.echo(f"API key: {where}; send it as 'Authorization: Bearer <key>'", err=True)
        bind, listen = host or cfg.host, port or cfg.port
        typer.echo(f"serving on http://{bind}:{listen} (docs at /, health /healthz, readiness /readyz, "
                   f"metrics /metrics)", err=True)
        return serve_command(listen, bind, workers or cfg.workers, config, access_log=cfg.access_log)

    cmd, env = run_guarded(_prepare)
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)  # bentoml becomes this process: signals and exit status are its own
