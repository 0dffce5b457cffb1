"""The Gradio UI: `build_app(studio)` builds the five tabs over a `Studio` facade."""


def build_app(studio, *, shared: bool = False):
    from studio.ui.app import build_app as _build

    return _build(studio, shared=shared)
