"""Leases' storage volumes on a provider's machine, each holding what its lease pays for.

Docker's ``local`` volumes have no size, and overlay2 limits a container's disk only on xfs
with project quotas. So where the host allows it (root, loop devices, ``mkfs.ext4``: checked
by :meth:`Volumes.probe`), each volume of a lease is an ext4 filesystem in an image file of
its own, mounted through a loop device (``nodev``, ``nosuid``) under the agent's data folder,
and handed to Docker as a ``local`` volume bound to a folder inside it. A container that
writes past the size gets ``ENOSPC`` ("No space left on device"); the other leases'
volumes are other filesystems and are not touched.

- **Size.** The image is formatted without reserved blocks, then grown until the mounted
  filesystem has at least the size free: a volume of ``64Mi`` takes 64 MiB of files and not
  much more (ext4's own metadata is on top). Images are sparse: they take host disk as they
  fill.
- **Persistence.** The image outlives its container: ``docker restart``, the agent's restart
  (the mount stays) and the machine's (the agent mounts every image of its leases again at
  start, before it starts any container) keep the data.
- **Copy-up.** The folder Docker binds is empty when new, so Docker copies in what the image
  has at the mount path (ownership and modes included), as with any named volume.
- **Removal.** Volumes stay after their lease closes (the product keeps them until deleted by
  hand): ``kova-live provider gc-volumes``, or the agent's ``--volume-retention``, remove a
  volume once the orchestrator reports its lease closed for long enough; the image goes too.

Where the host does not allow it, volumes are plain ``local`` volumes (``unlimited``): the
agent's start-up line says so.

Names: ``kova-vol-<lease>-<n>``, ``n`` the volume's position in the order's storage list (an
SDL volume name may be any string; it is kept in the label ``kova.volume``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

__all__ = ["LEASE_LABEL", "VolumeError", "Volumes", "volume_name"]

log = logging.getLogger("kova_live.agent")

LEASE_LABEL = "kova.lease"
MiB = 2**20


class VolumeError(Exception):
    """A volume cannot be made or mounted; the message says why."""


def volume_name(lease_id: int, index: int) -> str:
    """The Docker volume of the lease's ``index``-th storage volume."""
    return f"kova-vol-{lease_id}-{index}"


def _run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise VolumeError(f"{' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done


def _available(path: Path) -> int:
    found = os.statvfs(path)
    return found.f_bavail * found.f_frsize


@dataclass
class Volumes:
    """This provider's lease volumes (see the module's docs). ``sized``: whether volumes are
    filesystem images of their own (else plain, unlimited ``local`` volumes)."""

    client: docker.DockerClient
    provider_id: int
    folder: Path  # images and their mounts: <folder>/<name>.img, <folder>/<name>/
    sized: bool

    @staticmethod
    def probe(folder: Path) -> str | None:
        """Why sized volumes cannot be made here (None: they can): makes, mounts and removes
        a small image."""
        if os.geteuid() != 0:
            return "the agent does not run as root (mounting a filesystem image needs it)"
        for tool in ("mkfs.ext4", "mount", "umount"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed"
        if not Path("/dev/loop-control").exists():
            return "this machine has no loop devices (/dev/loop-control)"
        folder.mkdir(parents=True, exist_ok=True)
        image, mount = folder / ".probe.img", folder / ".probe"
        try:
            _format(image, 4 * MiB)
            mount.mkdir(exist_ok=True)
            _run("mount", "-o", "loop,nodev,nosuid", str(image), str(mount))
            _run("umount", str(mount))
        except (VolumeError, OSError, subprocess.SubprocessError) as exc:
            return f"a filesystem image cannot be mounted: {exc}"
        finally:
            with contextlib.suppress(OSError):
                mount.rmdir()
            image.unlink(missing_ok=True)
        return None

    def describe(self) -> str:
        """One line for the agent's start-up message."""
        if self.sized:
            return "storage volumes: sized (an ext4 image on a loop device each)"
        return "storage volumes: NOT sized (plain Docker volumes: a container may fill the disk)"

    # ------------------------------------------------------------------ one volume

    def ensure(self, lease_id: int, index: int, volume: dict[str, Any]) -> str:
        """The Docker volume of the lease's ``index``-th storage volume (``volume``: its name
        and size), made (or mounted again) if need be; its name. Raises :class:`VolumeError`."""
        name = volume_name(lease_id, index)
        labels = {
            LEASE_LABEL: str(lease_id), "kova.provider": str(self.provider_id),
            "kova.volume": str(volume["name"])[:200], "kova.size": str(volume["size"]),
            "kova.sized": "1" if self.sized else "0",
        }  # fmt: skip
        try:
            existing = self.client.volumes.get(name)
        except docker.errors.NotFound:
            existing = None
        if existing is not None:
            if (existing.attrs.get("Labels") or {}).get("kova.sized") == "1":
                self.mount(existing)
            return name
        if not self.sized:
            self.client.volumes.create(name, labels=labels)
            return name
        image, mount = self.folder / f"{name}.img", self.folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        _fit(image, mount, int(volume["size"]))
        _run("mount", "-o", "loop,nodev,nosuid", str(image), str(mount))
        data = mount / "data"
        data.mkdir(exist_ok=True)
        self.client.volumes.create(
            name, driver="local", labels=labels,
            driver_opts={"type": "none", "o": "bind", "device": str(data)},
        )  # fmt: skip
        return name

    def mount(self, volume: Any) -> bool:
        """Mount a sized volume's image if it is not mounted (after the machine restarted);
        whether it had to be. Raises :class:`VolumeError` if its image is missing."""
        device = (volume.attrs.get("Options") or {}).get("device") or ""
        mount = Path(device).parent
        if os.path.ismount(mount):
            return False
        image = mount.parent / f"{volume.name}.img"
        if mount.name != volume.name or not image.exists():
            raise VolumeError(f"volume {volume.name}: its filesystem image {image} is missing")
        mount.mkdir(exist_ok=True)
        _run("mount", "-o", "loop,nodev,nosuid", str(image), str(mount))
        return True

    def mount_all(self) -> list[str]:
        """Mount every sized volume of this provider that is not mounted (after the machine
        restarted); the names mounted."""
        done = []
        for volume in self.mine():
            if (volume.attrs.get("Labels") or {}).get("kova.sized") != "1":
                continue
            try:
                if self.mount(volume):
                    done.append(volume.name)
            except VolumeError as exc:
                log.warning("%s: not mounted", exc)
        return done

    def mine(self) -> list[Any]:
        """This provider's lease volumes (those of earlier agents too)."""
        mine = {"label": f"kova.provider={self.provider_id}"}
        return list(self.client.volumes.list(filters=mine))

    def remove(self, volume: Any) -> None:
        """Remove a volume, and its image if it has one. Raises docker's APIError if a
        container still uses it."""
        volume.remove(force=True)
        device = (volume.attrs.get("Options") or {}).get("device")
        if not device or (volume.attrs.get("Labels") or {}).get("kova.sized") != "1":
            return  # a plain volume: Docker removed its files
        # the folder Docker bound is <folder>/<name>/data, whichever folder the agent used
        mount = Path(device).parent
        if mount.name != volume.name:
            raise VolumeError(f"volume {volume.name} is bound to {device}, not an image's mount")
        if os.path.ismount(mount):
            _run("umount", str(mount))
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(mount)
        (mount.parent / f"{volume.name}.img").unlink(missing_ok=True)

    def carry_over(self, lease_id: int, index: int, volume: dict[str, Any]) -> str | None:
        """Copy the files of an earlier agent's volume of the lease (``kova-lease-<id>-<SDL
        name>``, unsized) into the lease's ``index``-th volume, ownership and modes kept, once:
        only while that volume does not exist yet. The old volume stays until ``gc-volumes``.
        Its name, if there was one to carry over. Raises :class:`VolumeError` (the data does
        not fit, say)."""
        try:
            old = self.client.volumes.get(f"kova-lease-{lease_id}-{volume['name']}")
        except (docker.errors.NotFound, docker.errors.APIError):
            return None  # (an SDL name Docker refuses as a volume name: there is none)
        try:
            self.client.volumes.get(volume_name(lease_id, index))
            return None  # carried over already
        except docker.errors.NotFound:
            pass
        target = self.client.volumes.get(self.ensure(lease_id, index, volume)).attrs
        # a sized volume's files are in the folder Docker binds; a plain one's at its mountpoint
        where = (target.get("Options") or {}).get("device") or target["Mountpoint"]
        try:
            _run("cp", "-a", f"{old.attrs['Mountpoint']}/.", f"{where}/")
        except VolumeError as exc:
            raise VolumeError(f"the data of volume {volume['name']!r} from an earlier agent "
                              f"does not fit its {volume['size']} bytes: {exc}") from exc
        return str(old.name)


def _format(image: Path, size: int) -> None:
    with image.open("wb") as f:
        f.truncate(size)
    _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))


def _fit(image: Path, mount: Path, size: int) -> None:
    """Make ``image`` an ext4 filesystem with at least ``size`` bytes free when mounted (and
    not much more): formatted, measured, and made again bigger by what was missing."""
    mount.mkdir(exist_ok=True)
    length = size
    for _ in range(5):
        _format(image, length)
        _run("mount", "-o", "loop,nodev,nosuid", str(image), str(mount))
        try:
            free = _available(mount)
        finally:
            _run("umount", str(mount))
        if free >= size:
            return
        length += size - free + MiB  # what ext4's metadata took, and a little for its growth
    raise VolumeError(f"could not make a filesystem of {size} bytes in {image}")
