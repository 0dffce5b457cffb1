"""Base models: where one comes from (built-in, folder, single file, hub), its family, and LoRA file formats.
"""
