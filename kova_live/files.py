"""Uploaded files: ``POST /v1/files`` and ``GET /v1/files/{sha256}``.

A tenant uploads a file's bytes as the request body; the orchestrator keeps the content once in
the database, named by its SHA-256, in chunks of :data:`CHUNK` bytes (``file_chunks``), and
records that this tenant uploaded it (``files``). Every orchestrator on the database, a leader
or a standby, takes uploads and serves every file. A manifest places such a file in a service's
containers (the core's ``files`` field of a service: ``{sha256, path}``); creating the
deployment checks that the tenant uploaded each one and records the reference. The provider
holding a live lease on such a deployment may then fetch the file, and so may a tenant who
uploaded it; to anyone else the file does not exist (404).

Neither direction holds a whole file in memory: an upload is spooled to a file in the
process's ``--data-dir`` (``files/``) while its hash is computed, then written to the database
a chunk at a time; a download reads one chunk at a time, each on a connection of its own, so a
client that reads slowly holds no database connection.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .app import CLOCK, ENGINE, READER, ApiError, authenticate
from .db import transact
from .schema import deployment_files, file_chunks, files, leases

__all__ = ["CHUNK", "FILES_DIR", "MAX_FILE", "add_routes", "check_files", "import_folder"]

FILES_DIR: web.AppKey[Path] = web.AppKey("files_dir", Path)
MAX_FILE = 64 * 1024 * 1024  # bytes in one uploaded file
CHUNK = 1024 * 1024  # bytes in one row of file_chunks
_SHA256 = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger("kova_live.files")


def _insert(connection: AsyncConnection) -> Any:
    return (postgresql if connection.dialect.name == "postgresql" else sqlite).insert


async def _store(connection: AsyncConnection, sha256: str, spooled: Path) -> None:
    """The content of ``spooled`` as ``sha256``'s chunks, unless the database has them (the same
    content, uploaded before, or by a concurrent upload: its rows win, ours are not written)."""
    if await connection.scalar(select(file_chunks.c.seq).where(
            file_chunks.c.sha256 == sha256, file_chunks.c.seq == 0)) is not None:  # fmt: skip
        return
    insert = _insert(connection)
    with spooled.open("rb") as content:
        seq = 0
        while True:
            data = content.read(CHUNK)
            if not data and seq > 0:
                break
            await connection.execute(
                insert(file_chunks).values(sha256=sha256, seq=seq, data=data)
                .on_conflict_do_nothing()
            )  # fmt: skip
            seq += 1
            if len(data) < CHUNK:
                break


async def upload(request: web.Request) -> web.Response:
    """Store the body as a file (at most 64 MiB), named by its SHA-256; return the hash."""
    account = await authenticate(request)
    if account.role != "tenant":
        raise ApiError(403, "forbidden", "only tenants upload files")
    folder = request.app[FILES_DIR]
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-")
    spooled = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as out:
            async for chunk in request.content.iter_chunked(256 * 1024):
                size += len(chunk)
                if size > MAX_FILE:
                    raise ApiError(413, "file_too_large", f"a file may be at most {MAX_FILE} bytes")
                digest.update(chunk)
                out.write(chunk)
        sha256 = digest.hexdigest()
        height = request.app[CLOCK].height()

        async def work(connection: AsyncConnection) -> None:
            await _store(connection, sha256, spooled)  # the content before the row that says so
            await connection.execute(
                _insert(connection)(files)
                .values(sha256=sha256, tenant_id=account.id, size=size, created_height=height)
                .on_conflict_do_nothing()
            )

        await transact(request.app[ENGINE], work)
    finally:
        spooled.unlink(missing_ok=True)
    return web.json_response({"sha256": sha256, "size": size}, status=201)


async def download(request: web.Request) -> web.StreamResponse:
    """The file's bytes, for a tenant who uploaded it or a provider holding a live lease on a
    deployment that places it; 404 for anyone else."""
    account = await authenticate(request)
    sha256 = request.match_info["sha256"]
    if not _SHA256.fullmatch(sha256):
        raise ApiError(404, "not_found", f"no file {sha256!r}")
    if account.role == "tenant":
        allowed = exists().where(files.c.sha256 == sha256, files.c.tenant_id == account.id)
    else:
        allowed = (
            exists()
            .where(deployment_files.c.sha256 == sha256)
            .where(leases.c.deployment_id == deployment_files.c.deployment_id)
            .where(leases.c.provider_id == account.id, leases.c.state != "closed")
        )
    reader = request.app[READER]
    async with reader.connect() as connection:
        found = await connection.scalar(select(allowed))
        size = await connection.scalar(
            select(func.max(files.c.size)).where(files.c.sha256 == sha256)
        )
        chunks = await connection.scalar(
            select(func.count()).select_from(file_chunks).where(file_chunks.c.sha256 == sha256)
        )
    if not found or size is None or chunks != max(1, -(-size // CHUNK)):
        raise ApiError(404, "not_found", f"no file {sha256}")
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    for seq in range(chunks):
        async with reader.connect() as connection:
            data = await connection.scalar(select(file_chunks.c.data).where(
                file_chunks.c.sha256 == sha256, file_chunks.c.seq == seq))  # fmt: skip
        await response.write(data)
    await response.write_eof()
    return response


async def import_folder(engine: AsyncEngine, folder: Path) -> int:
    """Move the content of files uploaded before their content lived in the database (in
    ``folder``, named ``ab/abcdef...`` by SHA-256) into it; each file is removed once its
    chunks are committed. Returns how many were moved."""
    moved = 0
    for path in sorted(folder.glob("??/*")) if folder.is_dir() else []:
        if not (_SHA256.fullmatch(path.name) and path.parent.name == path.name[:2]):
            continue
        digest = hashlib.sha256()
        with path.open("rb") as content:
            while data := content.read(CHUNK):
                digest.update(data)
        if digest.hexdigest() != path.name:  # not what its name says: leave it be
            log.warning("%s: its content does not have the SHA-256 its name says; left", path)
            continue

        async def work(connection: AsyncConnection, path: Path = path) -> None:
            await _store(connection, path.name, path)

        await transact(engine, work)
        path.unlink()
        moved += 1
    if moved:
        log.info("moved %d uploaded files from %s into the database", moved, folder)
    return moved


async def check_files(
    connection: AsyncConnection, manifest: Any, tenant_id: int, deployment_id: int | None
) -> None:
    """Each file the manifest places must be one the tenant uploaded (400 naming the field);
    with a ``deployment_id``, record the references for the providers that will fetch them."""
    wanted: dict[str, str] = {}
    for name, service in manifest.services.items():
        for i, mount in enumerate(service.files):
            wanted.setdefault(mount.sha256, f"manifest.services.{name}.files.{i}.sha256")
    if not wanted:
        return
    have = set(
        (
            await connection.execute(
                select(files.c.sha256).where(
                    files.c.tenant_id == tenant_id, files.c.sha256.in_(list(wanted))
                )
            )
        ).scalars()
    )
    for sha256, field in wanted.items():
        if sha256 not in have:
            raise ApiError(
                400, "invalid_field", "no file with this SHA-256 uploaded by you"
                " (upload it with POST /v1/files first)", field,
            )  # fmt: skip
    if deployment_id is not None:
        await connection.execute(
            deployment_files.insert(),
            [{"deployment_id": deployment_id, "sha256": sha256} for sha256 in wanted],
        )


async def _import(app: web.Application) -> None:
    await import_folder(app[ENGINE], app[FILES_DIR])


def add_routes(app: web.Application) -> None:
    app.on_startup.append(_import)
    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files/{sha256}", download)
