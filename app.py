"""DreamBooth Studio: `python app.py [--base-model M] [--home DIR] [--host H] [--port N] [--share-mode] [--devices D]` (also the Space
entry point). Address: --host/--port, else STUDIO_HOST/PORT, else Gradio's own GRADIO_SERVER_NAME/GRADIO_SERVER_PORT,
else Gradio's defaults (127.0.0.1, from port 7860 up); on a Space (SPACE_ID) the host defaults to 0.0.0.0."""
import argparse
import os


def launch_address(host: str | None, port: int | None, env) -> dict:
    """The server_name/server_port to give Gradio's launch; a key left out lets Gradio decide (it reads its own
    GRADIO_SERVER_NAME/GRADIO_SERVER_PORT, then uses its defaults), so its settings apply unless ours say otherwise."""
    host = host or env.get("STUDIO_HOST") or None
    if host is None and env.get("SPACE_ID") and not env.get("GRADIO_SERVER_NAME"):
        host = "0.0.0.0"  # a Space must listen on every interface
    if port is None and env.get("PORT"):
        if not env["PORT"].strip().isdigit():
            raise ValueError(f"PORT={env['PORT']!r} is not a port number")
        port = int(env["PORT"])
    return {**({"server_name": host} if host else {}), **({"server_port": port} if port is not None else {})}


def main() -> None:
    space = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description="DreamBooth Studio web UI")
    parser.add_argument("--base-model", default=os.environ.get("STUDIO_BASE_MODEL") or None,
                        help="hub id, local folder or single file (default: the built-in model)")
    parser.add_argument("--home", default=os.environ.get("STUDIO_HOME") or None, help="workspace folder")
    parser.add_argument("--host", help="default: $STUDIO_HOST, $GRADIO_SERVER_NAME, else 127.0.0.1 (0.0.0.0 on a Space)")
    parser.add_argument("--port", type=int, help="default: $PORT, $GRADIO_SERVER_PORT, else the first free one from 7860")
    parser.add_argument("--devices", default=os.environ.get("STUDIO_DEVICES") or None,
                        help="train one job at a time on each of these, e.g. cuda:0,cuda:1 (default: $STUDIO_DEVICES, "
                             "else every visible GPU)")
    parser.add_argument("--share-mode", action="store_true", default=os.environ.get("STUDIO_SHARED") == "1" or space,
                        help="multi-user mode: each browser (or login) gets its own workspace")
    args = parser.parse_args()
    try:
        address = launch_address(args.host, args.port, os.environ)
    except ValueError as exc:
        parser.error(str(exc))

    from studio.logs import quiet_libraries

    quiet_libraries()
    from studio.engine import Studio
    from studio.ui.app import serve

    try:
        studio = Studio(args.home, base_model=args.base_model, shared=args.share_mode, devices=args.devices)
    except ValueError as exc:  # a device this machine does not have: said before the page opens
        parser.error(str(exc))
    auth = os.environ.get("STUDIO_AUTH")
    serve(studio, **address, auth=tuple(auth.split(":", 1)) if auth and ":" in auth else None)


if __name__ == "__main__":
    main()
