"""Where Easy Ship documents (label, invoice, warranty PDFs) are kept: an S3 bucket, or a local directory.

Production stores them in S3 (``documents.bucket`` and ``documents.prefix``, server-side encryption on:
the PDFs hold buyers' names and addresses), reached with ``aws``'s endpoint and credentials; dev, tests
and the demo reach the local S3-protocol server `ordersync dev up` starts, or a directory
(``documents.directory``) when none runs. Events carry a document's location (``s3://bucket/key`` or
``file:///path``), never its bytes. An object is written under a key derived from the order and
Amazon's reference, so storing the same document again overwrites it with the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from botocore.exceptions import ClientError

from ordersync.aws import aws_client
from ordersync.settings import DocumentSettings, Settings

PDF = "application/pdf"
#: What every PDF starts with (ISO 32000-1, 7.5.2): a download that is not a PDF is refused.
PDF_MAGIC = b"%PDF-"


class DocumentNotFound(LookupError):
    """No document at that location (or a location this store does not serve)."""


@dataclass(frozen=True)
class StoredDocument:
    """A stored document: where it is, its size and SHA-256."""

    location: str
    size_bytes: int
    sha256: str


def document_key(settings: DocumentSettings, seller_id: str, order_id: str, reference: str) -> str:
    """The object key of an order's documents: ``<prefix><seller>/<order>/<reference>.pdf`` (each part
    made safe for a key and a file name)."""
    parts = (quote(part, safe="-_.") for part in (seller_id, order_id, reference))
    return settings.prefix + "/".join(parts) + ".pdf"


def is_pdf(content: bytes) -> bool:
    return content.startswith(PDF_MAGIC)


class DocumentStore(Protocol):
    async def put(self, key: str, content: bytes) -> StoredDocument: ...

    async def get(self, location: str) -> bytes: ...


def _stored(location: str, content: bytes) -> StoredDocument:
    return StoredDocument(location, len(content), hashlib.sha256(content).hexdigest())


class S3DocumentStore:
    """PDFs in an S3 bucket, encrypted at rest by S3 (SSE-S3, or SSE-KMS with ``kms_key_id``)."""

    def __init__(self, s3: Any, settings: DocumentSettings) -> None:
        self._s3 = s3
        self.settings = settings

    async def ensure_bucket(self) -> None:
        try:
            await self._s3.head_bucket(Bucket=self.settings.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            await self._s3.create_bucket(Bucket=self.settings.bucket)

    async def put(self, key: str, content: bytes) -> StoredDocument:
        encryption: dict[str, str] = {"ServerSideEncryption": self.settings.server_side_encryption}
        if self.settings.server_side_encryption == "aws:kms" and self.settings.kms_key_id:
            encryption["SSEKMSKeyId"] = self.settings.kms_key_id
        digest = hashlib.sha256(content).hexdigest()
        await self._s3.put_object(
            Bucket=self.settings.bucket,
            Key=key,
            Body=content,
            ContentType=PDF,
            Metadata={"sha256": digest},
            **encryption,
        )
        return StoredDocument(f"s3://{self.settings.bucket}/{key}", len(content), digest)

    async def get(self, location: str) -> bytes:
        parts = urlsplit(location)
        if parts.scheme != "s3" or parts.netloc != self.settings.bucket:
            raise DocumentNotFound(location)
        try:
            answer = await self._s3.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise DocumentNotFound(location) from exc
            raise
        async with answer["Body"] as body:
            return bytes(await body.read())


class DirectoryDocumentStore:
    """PDFs in a local directory (dev without an S3 server); files readable by their owner only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()

    async def put(self, key: str, content: bytes) -> StoredDocument:
        return await asyncio.to_thread(self._put, key, content)

    async def get(self, location: str) -> bytes:
        return await asyncio.to_thread(self._get, location)

    def _put(self, key: str, content: bytes) -> StoredDocument:
        path = self.directory / key
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_suffix(".part")
        partial.write_bytes(content)
        partial.chmod(0o600)
        partial.replace(path)  # readers never see half a PDF
        return _stored(path.as_uri(), content)

    def _get(self, location: str) -> bytes:
        parts = urlsplit(location)
        path = Path(unquote(parts.path)).resolve()
        if parts.scheme != "file" or not path.is_relative_to(self.directory):
            raise DocumentNotFound(location)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise DocumentNotFound(location) from exc


@contextlib.asynccontextmanager
async def document_store(settings: Settings) -> AsyncIterator[DocumentStore]:
    """The configured store, open for the block: the directory when ``documents.directory`` is set, else
    the S3 bucket (created when missing)."""
    if settings.documents.directory is not None:
        yield DirectoryDocumentStore(settings.documents.directory)
        return
    async with aws_client(settings.aws, "s3") as s3:
        store = S3DocumentStore(s3, settings.documents)
        await store.ensure_bucket()
        yield store
