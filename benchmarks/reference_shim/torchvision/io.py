"""torchvision.io: an empty stand-in. transformers (video_utils) imports it at import time whenever it finds a
`torchvision` module; the reference script never reads images or video through it. Any use fails loudly."""


def __getattr__(name: str):
    raise AttributeError(f"torchvision.io.{name} is not in the benchmark's torchvision shim "
                         "(benchmarks/reference_shim): only the DreamBooth reference script's transforms are")
