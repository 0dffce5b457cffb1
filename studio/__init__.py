"""DreamBooth Studio: teach a text-to-image model a new subject."""

__version__ = "0.1.0"
