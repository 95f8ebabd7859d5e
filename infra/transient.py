"""Which failures are worth a retry: network and I/O hiccups, not bad input or missing files."""

from __future__ import annotations

TRANSIENT_TYPES: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, TRANSIENT_TYPES):
        return True
    try:  # botocore/aiohttp errors surface through s3fs as these
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

        if isinstance(exc, (BotoConnectionError, EndpointConnectionError, ReadTimeoutError)):
            return True
    except ImportError:  # pragma: no cover - botocore ships with s3fs
        pass
    if isinstance(exc, OSError) and type(exc) is OSError:  # plain OSError: EIO, connection reset, ...
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)
