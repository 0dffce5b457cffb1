"""The built-in world: procedural pictures, their judge, the demo subject and the built-in model's pretraining."""
