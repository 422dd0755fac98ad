"""codecl: continual, parameter-efficient learning of code-generation models.

A frozen T5-family encoder-decoder learns programming languages one after another through
small per-task modules (PEFT LoRA adapters, inserted transformer blocks, or both).
"""

__version__ = "0.1.0"


def load(run_dir, method=None, seed=None, device=None, progress=False):
    """Load a finished run for generation: `codecl.load("runs/quickstart").generate("Add two numbers.", "python")`.

    `method`/`seed` default to the run with the best final average BLEU; see `codecl.serve.generator`.
    Imported on call, so `import codecl` stays light.
    """
    from codecl.serve.generator import load as _load

    return _load(run_dir, method=method, seed=seed, device=device, progress=progress)
