"""Uploaded files: ``POST /v1/files`` and ``GET /v1/files/{sha256}``.

A tenant uploads a file's bytes as the request body; the orchestrator keeps the content once in
its data folder, named by its SHA-256 (``files/ab/abcdef...``), and records that this tenant
uploaded it. A manifest places such a file in a service's containers (the core's ``files``
field of a service: ``{sha256, path}``); creating the deployment checks that the tenant
uploaded each one and records the reference. The provider holding a live lease on such a
deployment may then fetch the file, and so may a tenant who uploaded it; to anyone else the
file does not exist (404).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .app import CLOCK, ENGINE, READER, ApiError, authenticate
from .db import transact
from .schema import deployment_files, files, leases

__all__ = ["FILES_DIR", "MAX_FILE", "add_routes", "check_files", "file_path"]

FILES_DIR: web.AppKey[Path] = web.AppKey("files_dir", Path)
MAX_FILE = 64 * 1024 * 1024  # bytes in one uploaded file
_SHA256 = re.compile(r"[0-9a-f]{64}")


def file_path(folder: Path, sha256: str) -> Path:
    """Where the content with this SHA-256 lives."""
    return folder / sha256[:2] / sha256


async def upload(request: web.Request) -> web.Response:
    """Store the body as a file (at most 64 MiB), named by its SHA-256; return the hash."""
    account = await authenticate(request)
    if account.role != "tenant":
        raise ApiError(403, "forbidden", "only tenants upload files")
    folder = request.app[FILES_DIR]
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            async for chunk in request.content.iter_chunked(256 * 1024):
                size += len(chunk)
                if size > MAX_FILE:
                    raise ApiError(413, "file_too_large", f"a file may be at most {MAX_FILE} bytes")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())  # on disk before the row that says it exists commits
        sha256 = digest.hexdigest()
        final = file_path(folder, sha256)
        final.parent.mkdir(exist_ok=True)
        os.replace(temporary, final)  # the same content always: replacing is harmless
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    height = request.app[CLOCK].height()

    async def work(connection: AsyncConnection) -> None:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        await connection.execute(
            dialect.insert(files)
            .values(sha256=sha256, tenant_id=account.id, size=size, created_height=height)
            .on_conflict_do_nothing()
        )

    await transact(request.app[ENGINE], work)
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
    async with request.app[READER].connect() as connection:
        found = await connection.scalar(select(allowed))
    path = file_path(request.app[FILES_DIR], sha256)
    if not found or not path.is_file():
        raise ApiError(404, "not_found", f"no file {sha256}")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


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


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files/{sha256}", download)
