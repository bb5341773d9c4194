"""hwnas: hardware-aware neural architecture search."""

__version__ = "0.1.0"


def load(folder):
    """The sub-network exported by ``hwnas export`` into ``folder``: a ready ``torch.nn.Module``
    (eval mode; call ``.train()`` to fine-tune it)."""
    from .export import load_model

    return load_model(folder)
