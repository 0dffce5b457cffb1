"""DreamBooth Studio: `python app.py [--base-model M] [--home DIR] [--share-mode]` (also the Space entry point)."""
import argparse
import os


def main() -> None:
    space = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description="DreamBooth Studio web UI")
    parser.add_argument("--base-model", default=os.environ.get("STUDIO_BASE_MODEL") or None,
                        help="hub id, local folder or single file (default: the built-in model)")
    parser.add_argument("--home", default=os.environ.get("STUDIO_HOME") or None, help="workspace folder")
    parser.add_argument("--host", default="0.0.0.0" if space else "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--share-mode", action="store_true", default=os.environ.get("STUDIO_SHARED") == "1" or space,
                        help="multi-user mode: each browser (or login) gets its own workspace")
    args = parser.parse_args()

    from studio.logs import quiet_libraries

    quiet_libraries()
    from studio.engine import Studio
    from studio.ui.app import build_app, serve

    studio = Studio(args.home, base_model=args.base_model, shared=args.share_mode)
    auth = os.environ.get("STUDIO_AUTH")
    demo = build_app(studio, shared=args.share_mode)
    serve(demo, args.share_mode, server_name=args.host, server_port=args.port,
          auth=tuple(auth.split(":", 1)) if auth and ":" in auth else None)


if __name__ == "__main__":
    main()
