"""torchvision.transforms.v2.functional: only `InterpolationMode` (transformers names it in annotations and
resampling maps); everything else fails loudly, since nothing on the reference script's path calls it."""

from .. import InterpolationMode  # noqa: F401


def __getattr__(name: str):
    raise AttributeError(f"torchvision.transforms.v2.functional.{name} is not in the benchmark's torchvision shim "
                         "(benchmarks/reference_shim): only the DreamBooth reference script's transforms are")
