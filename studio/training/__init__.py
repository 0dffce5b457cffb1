"""Training: the DreamBooth loop in numbered phases, prior preservation, checkpoints, previews and export.

It depends on small typed parts (a base model, a run folder, prepared photos, a device), never on the Studio
facade, and reports only through typed events.
"""
