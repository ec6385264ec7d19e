"""Optional dependencies: the core install is what encode and decode need; the rest comes in extras.

    pip install nbmf              encode / decode / inspect (numpy, numba, tokenizers, safetensors, zstandard)
    pip install 'nbmf[data]'      nbmf collect, datasets, nbmf migrate (pyarrow, tqdm, cryptography)
    pip install 'nbmf[bench]'     nbmf bench: anchors, similarity, tables and plots (brotli, rapidfuzz, rich,
                                  matplotlib, tqdm)
    pip install 'nbmf[client]'    nbmf.client: the codec service's HTTP client (httpx)

Modules that need one import it through ``require`` where it is used, so a decode-only process never
loads it and a missing one says which extra brings it.
"""
from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {"pyarrow": "data", "tqdm": "data", "cryptography": "data", "brotli": "bench", "rapidfuzz": "bench",
          "rich": "bench", "matplotlib": "bench", "httpx": "client"}  # top-level module -> the extra that installs it


def require(module: str) -> ModuleType:
    """``importlib.import_module(module)``; when it is not installed, an ImportError naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.partition(".")[0]
        if e.name is None or e.name.partition(".")[0] != top:
            raise  # something else is missing inside an installed package: not ours to explain
        extra = EXTRAS[top]
        raise ModuleNotFoundError(f"{top} is not installed: it comes with the '{extra}' extra, "
                                  f"pip install 'nbmf[{extra}]'", name=e.name) from e
