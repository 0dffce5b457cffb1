"""The samplers a user can pick by name, and the diffusers class behind each.

Kept apart from the pipelines (and torch), so the web page can list them without loading anything heavy.
"""

SCHEDULERS = {
    "default": None,  # the base model's own scheduler config
    "ddim": "DDIMScheduler",  # deterministic; try it (or ~100 steps) when results look noisy
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
}
