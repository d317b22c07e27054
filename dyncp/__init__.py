"""dyncp: speech enhancement with Dynamic Channel Pruning (DynCP, ICASSP 2025).

Quick use::

    import dyncp
    model, meta = dyncp.load_model("best.pt")
    clean = dyncp.enhance(model, noisy, sr=16000)
"""

from .checkpoint import load_model, save_model
from .config import Config, load_config
from .enhance import enhance, enhance_tensor
from .errors import (AudioError, BudgetError, CheckpointError, ConfigError, DataError,
                     DyncpError, DyncpWarning, OutputError)
from .model import ConvFSENet, build_model

__version__ = "0.1.0"

__all__ = [
    "AudioError", "BudgetError", "CheckpointError", "Config", "ConfigError", "ConvFSENet", "DataError",
    "DyncpError", "DyncpWarning", "OutputError", "build_model", "enhance", "enhance_tensor",
    "load_config", "load_model", "save_model", "__version__",
]


def __getattr__(name):  # lazy: the streaming runtime pulls numba, only load it when asked
    if name == "Streamer":
        from .streaming import Streamer
        return Streamer
    if name == "Governor":
        from .governor import Governor
        return Governor
    raise AttributeError(f"module 'dyncp' has no attribute {name!r}")
