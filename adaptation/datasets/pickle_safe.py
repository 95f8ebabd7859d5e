"""A restricted unpickler for graph pickles from outside (DCRNN ``adj_mx.pkl``).

A pickle can name any importable callable and call it while loading, so a downloaded ``adj_mx.pkl`` is
untrusted code unless the globals it may name are limited. The DCRNN pickle ``[sensor_ids,
sensor_id_to_ind, adj_mx]`` only needs plain containers, strings, numbers and numpy's own array
reconstruction; everything else is refused with an error that names the file and the refused global.
"""

from __future__ import annotations

import builtins
import codecs
import io
import pickle
from typing import IO, Any

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric

# (module, name) -> object. numpy moved ``numpy.core`` to ``numpy._core`` in 2.0; pickles written by older
# numpy name the old module, so both spellings map to the same function (without importing the deprecated
# ``numpy.core`` shim).
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY_GLOBALS[(_module, "_reconstruct")] = _multiarray._reconstruct
    # numpy scalars (e.g. an np.int64 index in sensor_id_to_ind) rebuild from a dtype and raw bytes.
    _NUMPY_GLOBALS[(_module, "scalar")] = _multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    # pickle protocol 5 rebuilds arrays from a buffer: ``_frombuffer(bytes, dtype, shape, order)``.
    _NUMPY_GLOBALS[(_module, "_frombuffer")] = _numeric._frombuffer
_NUMPY_GLOBALS[("numpy", "ndarray")] = np.ndarray
_NUMPY_GLOBALS[("numpy", "dtype")] = np.dtype

_BUILTIN_NAMES = ("list", "dict", "tuple", "set", "frozenset", "str", "int", "float", "bytes", "bytearray",
                  "bool", "complex")
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{("builtins", n): getattr(builtins, n) for n in _BUILTIN_NAMES},
    # Python 2 pickles name the builtins module ``__builtin__``.
    **{("__builtin__", n): getattr(builtins, n) for n in _BUILTIN_NAMES},
    # Python 3 writes the raw bytes of a numpy array at protocol <= 2 as ``_codecs.encode(str, "latin1")``:
    # a pure str -> bytes conversion, needed to read such arrays.
    ("_codecs", "encode"): codecs.encode,
    **_NUMPY_GLOBALS,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; the message names the file and the global."""

    def __init__(self, file: str, module: str, name: str) -> None:
        self.file, self.module, self.name = file, module, name
        super().__init__(
            f"{file}: refused to unpickle global {module}.{name}: only plain containers, str/int/float/bytes "
            "and numpy arrays are admitted in a graph pickle (it may be malicious or not a DCRNN adj_mx.pkl)"
        )


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file: IO[bytes], source: str, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(self.source, module, name) from None


def loads_restricted(data: bytes, source: str = "<bytes>", encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with the allow-list; ``source`` names the input in errors.

    ``latin1`` decodes Python 2 ``str`` objects (DCRNN's pickles were written by Python 2) byte for byte.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or corrupt: name the file and keep the cause
        raise pickle.UnpicklingError(f"{source}: not a readable pickle: {exc}") from exc


def load_pickle_restricted(path: str, storage_options: dict[str, Any] | None = None) -> Any:
    """Read a pickle file (local path or fsspec URL) with the restricted unpickler."""
    from infra.storage import open_input

    with open_input(path, storage_options) as fh:
        data = fh.read()
    return loads_restricted(data, source=str(path))
