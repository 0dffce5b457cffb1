"""The Gradio UI: `build_app(studio)` builds the five tabs over a `Studio` facade; `serve(studio)` launches them.

Only this package imports gradio. The shell (`app.py`) creates what the tabs share (`kit.Ctx`); each tab is a
module of its own that imports `kit` and `views` (pure functions, testable without gradio), never another tab.
"""


def build_app(studio):
    from studio.ui.app import build_app as _build

    return _build(studio)
