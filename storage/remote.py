"""Stores on object storage (``s3://bucket/…``): reachable, with credentials from the environment.

A campaign names its store by URL only. What lets this process and every
worker in at it, keys and endpoint, comes from each one's environment, the
way the filesystem's own client reads it: for ``s3://`` (s3fs, botocore)
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_PROFILE``, an
instance role; or fsspec's ``FSSPEC_S3_<OPTION>`` variables
(``FSSPEC_S3_ENDPOINT_URL``). Never the campaign file, which is shared,
copied and kept with the results: a URL that carries credentials
(``s3://KEY:SECRET@bucket/…``) is refused.

Before a run writes anything, :func:`remote_store_problem` asks the store's
bucket for itself, so that a missing bucket, refused credentials or an
endpoint that does not answer are one clear error instead of a failure
inside the first stage.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import fsspec

__all__ = ["CREDENTIAL_VARIABLES", "remote_store_problem", "url_credentials_problem"]

#: The environment variables that carry s3:// credentials and endpoint, for the errors.
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
#: URL schemes of stores that live in this process only: nothing to reach.
_LOCAL_SCHEMES = ("memory", "file", "local")


def url_credentials_problem(url: str) -> str | None:
    """What is wrong with credentials written into a store URL, or None.

    Examples
    --------
    >>> url_credentials_problem("s3://bucket/c.zarr") is None
    True
    >>> print(url_credentials_problem("s3://AKIA:pw@bucket/c.zarr"))  # doctest: +ELLIPSIS
    the URL carries credentials (user 'AKIA' and a password); ...
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    what = f"user {parts.username!r}" + (" and a password" if parts.password else "")
    return (
        f"the URL carries credentials ({what}); expected them in the environment of the run "
        f"and of every worker ({', '.join(CREDENTIAL_VARIABLES)}), never in the campaign file"
    )


def remote_store_problem(url: str) -> str | None:
    """Why the store at `url` cannot be used by this process, or None; nothing is written.

    The store's bucket (the first part of the path) is looked up with the
    credentials and endpoint that the filesystem finds in the environment.

    Parameters
    ----------
    url : str
        ``s3://bucket/path/store.zarr`` (any fsspec URL; ``memory://`` and
        ``file://`` are not looked up).

    Returns
    -------
    str or None
        The problem in words, what was found and what to do: credentials in
        the URL, a bucket that does not exist, credentials refused, an
        endpoint that does not answer.
    """
    problem = url_credentials_problem(url)
    if problem is not None:
        return problem
    scheme = url.split("://", 1)[0]
    if scheme in _LOCAL_SCHEMES:
        return None
    filesystem, path = fsspec.core.url_to_fs(url)
    bucket = path.strip("/").split("/", 1)[0]
    if not bucket:
        return f"no bucket in the URL; expected {scheme}://BUCKET/path/store.zarr"
    try:
        filesystem.invalidate_cache()
        filesystem.ls(bucket, detail=False)
    except FileNotFoundError:
        return (
            f"the bucket {bucket!r} does not exist{_endpoint(filesystem)}; expected an "
            "existing bucket (create it first: debond creates the store inside it, not the "
            "bucket)"
        )
    except PermissionError as error:
        return (
            f"the credentials were refused by the bucket {bucket!r}{_endpoint(filesystem)} "
            f"({error}); expected valid credentials in the environment "
            f"({', '.join(CREDENTIAL_VARIABLES)}) that may read and write the bucket"
        )
    except Exception as error:  # unreachable endpoint, no credentials: the client's own errors
        return (
            f"the bucket {bucket!r} cannot be reached{_endpoint(filesystem)}: "
            f"{type(error).__name__}: {error}; expected an endpoint that answers "
            f"(AWS_ENDPOINT_URL) and credentials in the environment "
            f"({', '.join(CREDENTIAL_VARIABLES)})"
        )
    return None


def _endpoint(filesystem: fsspec.AbstractFileSystem) -> str:
    """The words ' at <endpoint>' where the filesystem names one (s3fs's client), else ''."""
    client = getattr(filesystem, "s3", None)
    meta = getattr(client, "meta", None)
    url = getattr(meta, "endpoint_url", None)
    return f" at {url}" if url else ""
