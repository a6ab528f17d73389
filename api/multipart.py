"""``multipart/form-data`` read as it arrives: each ``file`` part goes straight to disk beside
the blob store (hashed while written, never held whole in memory), and reading stops with 413 the
moment a file passes ``KORAG_MAX_FILE_BYTES`` or the body passes the upload limit, with 507 when
the disk's free space falls under ``KORAG_MIN_FREE_DISK_MB``, and with 400 for a body that is not
well-formed multipart (one without its closing boundary included). Only a whole, well-formed body's
files are put in the blob store, pinned until :func:`release` (after the upload's records are
claimed, or the request refused): a refused or broken request leaves nothing on disk."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.errors import ApiError
from korag.services.lifecycle import release_upload
from korag.storage.blobs import BlobStore
from korag.storage.disk import DiskFullError, check_free
from korag.storage.registry import DocumentRegistry, this_process
from korag.storage.uploads import BlobWriter, TooLargeError, clean_filename

MAX_FIELD_BYTES = 64 * 1024  # a form field (source, metadata)
MAX_FIELDS = 1000


@dataclass
class ReceivedFile:
    field: str
    filename: str
    blob: str
    size: int
    pin: Path | None = None  # holds the blob until a record refers to it (see release)


@dataclass
class Received:
    files: list[ReceivedFile] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)


class _Parser:
    def __init__(self, blobs: BlobStore, max_file_bytes: int, max_files: int, charset: str, min_free: int) -> None:
        self.blobs, self.max_file_bytes, self.max_files, self.charset = blobs, max_file_bytes, max_files, charset
        self.min_free = min_free
        self.owner = this_process()
        self.out = Received()
        self.writers: list[BlobWriter] = []
        self.finished: list[BlobWriter] = []  # in the order of out.files
        self._name = b""
        self._value = b""
        self._disposition = b""
        self._field: str | None = None
        self._filename: str | None = None
        self._writer: BlobWriter | None = None
        self._data = bytearray()
        self._fields = 0

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self.charset)
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def on_part_begin(self) -> None:
        self._disposition, self._field, self._filename, self._writer = b"", None, None, None
        self._data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self._disposition = self._value
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(400, "Bad multipart body", 'a part has no Content-Disposition "name"')
        self._field = self._decode(options[b"name"])
        if b"filename" in options or self._field == "file":  # curl -F 'file=<x' sends no file name
            if len(self.out.files) >= self.max_files:
                raise ApiError(413, "Too many files", f"at most {self.max_files} files per request "
                               "(KORAG_API_MAX_FILES); send the rest in another request")
            self._filename = clean_filename(self._decode(options.get(b"filename", b"")))
            self._writer = BlobWriter(self.blobs, self.max_file_bytes, self.owner, self.min_free)
            self.writers.append(self._writer)
        else:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise ApiError(413, "Too many form fields", f"at most {MAX_FIELDS} form fields per request")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writer is not None:
            try:
                self._writer.write(data[start:end])
            except TooLargeError as exc:
                raise ApiError(413, "File too large", f"{self._filename}: {exc}") from None
            return
        if len(self._data) + (end - start) > MAX_FIELD_BYTES:
            raise ApiError(413, "Form field too large", f"form field {self._field!r} is over {MAX_FIELD_BYTES} bytes")
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._writer is not None:
            digest = self._writer.finish()
            self.out.files.append(ReceivedFile(self._field, self._filename, digest, self._writer.size))
            self.finished.append(self._writer)
        else:
            self.out.fields.setdefault(self._field, []).append(self._decode(bytes(self._data)))

    def place(self) -> None:
        """The whole body was read: its files into the blob store, pinned."""
        for writer, received in zip(self.finished, self.out.files):
            writer.place()
            received.pin = writer.pin

    def discard(self) -> None:
        for writer in self.writers:
            writer.discard()


async def receive(request: Request, blobs: BlobStore, max_file_bytes: int, max_upload_bytes: int,
                  max_files: int, min_free: int = 0) -> Received:
    """The form's fields and files (in the blob store, pinned: call :func:`release` when done).
    Raises ApiError: 413 for a body declared or found too large (before reading it when
    Content-Length says so), 415 for another content type, 400 for a malformed or unterminated
    body, 507 when the blob store's disk has less than ``min_free`` bytes free (before reading the
    body, or while writing it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
        raise ApiError(413, "Request body too large",
                       f"the body of {declared} bytes is over the limit of {max_upload_bytes} bytes "
                       "(KORAG_MAX_UPLOAD_BYTES); send fewer or smaller files per request")
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise ApiError(415, "Unsupported media type",
                       "send multipart/form-data with one or more `file` parts (curl -F file=@report.pdf)")
    if b"boundary" not in params:
        raise ApiError(400, "Bad multipart body", "the multipart Content-Type has no boundary")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "utf-8"
    try:
        check_free([blobs.root], min_free)
    except DiskFullError as exc:
        raise _disk_full(exc) from None
    parser = _Parser(blobs, max_file_bytes, max_files, charset, min_free)
    callbacks = {name: getattr(parser, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value", "on_header_end",
        "on_headers_finished")}
    multipart = MultipartParser(params[b"boundary"], callbacks)
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_upload_bytes:
                raise ApiError(413, "Request body too large",
                               f"the body is over the limit of {max_upload_bytes} bytes (KORAG_MAX_UPLOAD_BYTES)")
            multipart.write(chunk)
        multipart.finalize()
        if multipart.state != MultipartState.END:  # finalize() does not mind a missing closing boundary
            raise ApiError(400, "Bad multipart body", "the multipart body ends before its closing boundary "
                           f"(--{params[b'boundary'].decode('latin-1')}--): it was cut short; send it whole")
        parser.place()
    except DiskFullError as exc:
        parser.discard()
        raise _disk_full(exc) from None
    except FormParserError as exc:
        parser.discard()
        raise ApiError(400, "Bad multipart body", f"the multipart body cannot be read: {exc}") from None
    except ClientDisconnect:
        parser.discard()
        raise
    except BaseException:
        parser.discard()
        raise
    return parser.out


def _disk_full(exc: DiskFullError) -> ApiError:
    return ApiError(507, "Disk full", str(exc))


def release(received: Received, blobs: BlobStore, registry: DocumentRegistry) -> None:
    """The upload request is over (its records claimed, or it was refused): unpin its blobs, and
    remove each one no record refers to. Blocking: run it in a thread."""
    for item in received.files:
        release_upload(blobs, registry, item.blob, item.pin)
