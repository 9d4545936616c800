"""Model artifacts as objects in an S3 bucket: AWS S3, or MinIO (any S3 API) through
``endpoint_url``; the cluster's ArtifactStore (``artifact_store=s3``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from openanomaly.errors import NotFound, StoreError, StoreUnavailable

_MISSING = {"NoSuchKey", "404", "NotFound"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "503", "500"}


class S3ArtifactStore:
    """ArtifactStore over one bucket: key ``pipelines/<id>/<version>.bin`` is the object
    ``<prefix>pipelines/<id>/<version>.bin``.

    A PUT is atomic (readers see the old object or the new one), and the Trainer's keys carry
    the model version, so a version's artifact is never overwritten by another version's.
    A missing object raises NotFound; an unreachable endpoint StoreUnavailable; any other
    failure (no such bucket, access denied) StoreError. Messages name the bucket and key,
    never a credential.

    Args:
        bucket: The bucket (it must exist).
        prefix: Prepended to every key (``openanomaly/``).
        client: A boto3 S3 client; by default one is made from the other arguments (without
            keys, boto3's own chain: environment, shared files, instance role).
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "openanomaly/",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        client: Any | None = None,
    ) -> None:
        self.bucket, self.prefix = bucket, prefix
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=Config(
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                ),
            )
        self._client = client

    def save(self, key: str, data: bytes) -> None:
        with self._translated(key):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def load(self, key: str) -> bytes:
        with self._translated(key):
            answer = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            body: bytes = answer["Body"].read()
            return body

    def delete(self, key: str) -> None:
        with self._translated(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            self._client.close()

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or any(s in ("", ".", "..") for s in key.split("/")):
            raise ValueError(f"artifact key must be a relative path like 'a/b.bin': {key!r}")
        return f"{self.prefix}{key}"

    @contextlib.contextmanager
    def _translated(self, key: str) -> Iterator[None]:
        """botocore's errors become ours here, and only here."""
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as Unreachable

        where = f"artifact {key!r} in s3://{self.bucket}/{self.prefix}"
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise NotFound("artifact", key) from None
            message = exc.response.get("Error", {}).get("Message") or code
            ours = StoreUnavailable if code in _THROTTLED else StoreError
            raise ours(f"{where}: {code}: {message}", store="artifacts") from exc
        except (Unreachable, HTTPClientError) as exc:
            # refused, timed out, a connection dropped (after botocore's own retries)
            raise StoreUnavailable(f"{where}: {exc}", store="artifacts") from exc
        except BotoCoreError as exc:
            # No credential is ever in botocore's messages; the class name says what failed.
            raise StoreError(f"{where}: {type(exc).__name__}: {exc}", store="artifacts") from exc
