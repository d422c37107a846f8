"""``ridestream serve``: the rider-facing web service (the backend's HTTP API and pages)."""

from __future__ import annotations

import typer

from ridestream.console import err


def serve(
    port: int = typer.Option(8000, help="the HTTP port"),
    host: str = typer.Option("127.0.0.1", help="the address to listen on (0.0.0.0: every interface)"),
    only: str = typer.Option(None, "--only", help="predict: only POST /v1/predict/… (the duration service of the "
                             "web-service deployment; needs no broker)"),
) -> None:
    """Serve the API (/docs), the rider page (/) and the operator page (/ops) until Ctrl-C."""
    import uvicorn

    from producer.web.app import WebConfig, create_app
    from shared.contract.topics import create_topics
    from shared.kafka.clients import ensure_reachable, make_admin
    from shared.kafka.settings import load_settings

    if only not in (None, "predict"):
        raise typer.BadParameter(f"--only {only!r}: the one part that runs alone is predict")
    settings = load_settings()
    if only is None:
        admin = make_admin(settings)
        ensure_reachable(admin, settings)
        create_topics(admin, [s for s in settings.topic_specs() if s.name == settings.topics.backend_state])
    app = create_app(settings, WebConfig.from_env(only_predict=only == "predict"))
    err.print(f"ridestream web service on http://{host}:{port}/ (API docs at /docs)")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    except SystemExit as exc:  # uvicorn exits when it cannot bind
        if exc.code:
            raise typer.Exit(1) from None
