"""Inference: drawing with a base model, a trained LoRA, a full fine-tune or a checkpoint; compare grids; inpainting.

One pipeline builder serves previews, class images, export and drawing; loaded pipelines are kept and reused.
"""
