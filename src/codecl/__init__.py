"""codecl: continual, parameter-efficient learning of code-generation models.

A frozen T5-family encoder-decoder learns programming languages one after another through
small per-task modules (PEFT LoRA adapters, inserted transformer blocks, or both).
"""

__version__ = "0.1.0"
