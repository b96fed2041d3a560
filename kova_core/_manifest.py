"""Manifests: Akash SDL 2.0 and 2.1 files, parsed into an immutable model that yields one order per
replica.

Theory of operation
-------------------
A tenant brings an SDL file unchanged: ``services`` (image, command, env, ports),
``profiles.compute`` (resources), ``profiles.placement`` (provider attributes, auditors and the
maximum price per block of each compute profile) and the ``deployment`` map of service ->
placement -> profile + count. Kova adds a top-level ``kind: job`` with a ``max_runtime``, and
``files`` to a service: files the tenant uploaded to the orchestrator, by SHA-256, each placed
read-only at a path in the container.

:func:`parse_manifest` checks the whole file before it builds anything. It does not stop at the
first problem: every field is checked, and every reference (service, placement, profile, price,
storage volume) is resolved against the names the file defines, so a tenant sees all that is
wrong in one :class:`ManifestError`, each problem at the dotted path of its field
(``profiles.compute.web.resources.cpu.units``; list items by index, ``services.web.expose.0``).

Every field of SDL 2.0 and 2.1 is accepted. As Akash does, a key the parser does not know is
ignored, but not silently: it is a *warning* (:attr:`Manifest.warnings`, also carried by a
:class:`ManifestError`), naming the field and the known one it most resembles
(``services.web.depends-on: unknown field, ignored (did you mean 'depends_on'?)``). With
``strict=True`` an unknown key is a problem instead, as a typo usually is. A feature Kova does not
honour is a warning naming it too: IP endpoints (``endpoints``, ``expose.to.ip``),
``http_options``, ``params.permissions``, CPU and memory ``attributes``, registry ``credentials``
(providers run images their machines have) and ``signedBy`` Akash account addresses (no Kova
provider is audited by one). What would make the deployment wrong stays a problem: a bad size, a
missing profile, a reference to nothing, and what Akash's own parser refuses (a service that is
not deployed, a persistent volume without a mount, an endpoint that is not ``kind: ip`` or never
used, GPU attributes with no GPU, empty registry credentials).

:meth:`Manifest.order_specs` then yields one :class:`~kova_core.OrderSpec` per replica (unlike
Akash, which makes one order per placement group).

This module does no I/O: it takes text or an already-loaded mapping.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import yaml

from ._errors import ManifestError, ManifestProblem
from ._money import MAX_AMOUNT
from ._resources import Resources
from ._specs import GpuModel, OrderSpec, StorageVolume
from ._units import parse_cpu, parse_duration, parse_size

__all__ = [
    "KINDS",
    "STORAGE_CLASSES",
    "SUPPORTED_VERSIONS",
    "ComputeProfile",
    "DeploymentGroup",
    "Expose",
    "FileMount",
    "Manifest",
    "Placement",
    "Price",
    "RegistryCredentials",
    "Service",
    "StorageMount",
    "parse_manifest",
]

SUPPORTED_VERSIONS = ("2.0", "2.1")
"""The SDL versions a manifest may declare."""

KINDS = ("deployment", "job")
"""What a manifest asks for: a long-running deployment (the default) or a one-time job."""

STORAGE_CLASSES = ("beta1", "beta2", "beta3", "ram")
"""Storage classes a volume may ask for (SDL ``attributes.class``)."""


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """A maximum price: ``amount`` integer micro-units of ``denom`` per block."""

    denom: str
    amount: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageMount:
    """Where a service mounts one storage volume of its compute profile (SDL ``params.storage``)."""

    volume: str
    mount: str
    read_only: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FileMount:
    """An uploaded file (by the SHA-256 of its content, lowercase hex) that the provider places
    read-only at ``path`` in the service's container (Kova's ``files`` field of a service)."""

    sha256: str
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryCredentials:
    """Credentials for pulling a service's image from a private registry (SDL ``credentials``)."""

    host: str
    username: str
    password: str = field(repr=False)
    email: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expose:
    """One exposed port. ``as_port`` is the port seen from outside; ``global_`` if public."""

    port: int
    as_port: int
    proto: str = "tcp"
    global_: bool = False
    to_services: tuple[str, ...] = ()
    accept: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """One service: the container to run and how it is reached."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=_frozen)
    expose: tuple[Expose, ...] = ()
    storage_mounts: tuple[StorageMount, ...] = ()
    depends_on: tuple[str, ...] = ()
    credentials: RegistryCredentials | None = None
    files: tuple[FileMount, ...] = ()
    read_only_root: bool = False  # Kova's readOnlyRootFilesystem: only volumes and /tmp written


@dataclass(frozen=True, slots=True, kw_only=True)
class ComputeProfile:
    """A named set of resources. ``resources.storage`` is the sum of the volumes' sizes."""

    name: str
    resources: Resources
    storage: tuple[StorageVolume, ...] = ()
    gpu_models: tuple[GpuModel, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Where orders may go (provider attributes, auditors) and the price per compute profile."""

    name: str
    attributes: Mapping[str, str] = field(default_factory=_frozen)
    signed_by_any_of: tuple[str, ...] = ()
    signed_by_all_of: tuple[str, ...] = ()
    pricing: Mapping[str, Price] = field(default_factory=_frozen)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentGroup:
    """One entry of the ``deployment`` map: ``count`` replicas of a service in a placement."""

    service: str
    placement: str
    profile: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A parsed manifest. Build one with :func:`parse_manifest`, which checks every reference.

    ``max_runtime`` (blocks) is set for a job and ``None`` for a deployment. ``groups`` keep
    the order of the ``deployment`` map, then of each service's placements. ``warnings`` are
    what the parser ignored or cannot honour, each at its field's path (they take no part in
    comparisons).
    """

    version: str
    kind: str = "deployment"
    max_runtime: int | None = None
    services: Mapping[str, Service] = field(default_factory=_frozen)
    compute_profiles: Mapping[str, ComputeProfile] = field(default_factory=_frozen)
    placements: Mapping[str, Placement] = field(default_factory=_frozen)
    groups: tuple[DeploymentGroup, ...] = ()
    # what the parser had to say about the text (unknown fields ignored, features not honoured):
    # not part of what the manifest asks for, so two manifests asking alike are equal
    warnings: tuple[ManifestProblem, ...] = field(default=(), compare=False)

    @property
    def is_job(self) -> bool:
        """True for a one-time job (``kind: job``), False for a long-running deployment."""
        return self.kind == "job"

    def order_specs(self) -> tuple[OrderSpec, ...]:
        """One :class:`OrderSpec` per replica, in deployment-map, placement, replica order.

        Each carries the profile's resources, storage volumes (with the service's mounts) and
        GPU models, and the placement's attributes, auditors and price for the profile.
        Raises :class:`ManifestError` if a group names a service, placement, profile or price
        the manifest lacks (possible only for a manifest not built by :func:`parse_manifest`).
        """
        problems: list[ManifestProblem] = []
        specs: list[OrderSpec] = []
        for group in self.groups:
            path = f"deployment.{group.service}.{group.placement}"
            service = self.services.get(group.service)
            placement = self.placements.get(group.placement)
            profile = self.compute_profiles.get(group.profile)
            price = placement.pricing.get(group.profile) if placement else None
            if service is None:
                problems.append(ManifestProblem(path, f"no service named {group.service!r}"))
            if placement is None:
                problems.append(ManifestProblem(path, f"no placement named {group.placement!r}"))
            if profile is None:
                problems.append(ManifestProblem(path, f"no compute profile {group.profile!r}"))
            elif placement is not None and price is None:
                problems.append(ManifestProblem(path, f"no price for profile {group.profile!r}"))
            if service is None or placement is None or profile is None or price is None:
                continue
            mounts = {m.volume: m for m in service.storage_mounts}
            storage = tuple(
                replace(v, mount=mounts[v.name].mount, read_only=mounts[v.name].read_only)
                if v.name in mounts
                else v
                for v in profile.storage
            )
            for replica in range(group.count):
                specs.append(
                    OrderSpec(
                        service=group.service,
                        placement=group.placement,
                        profile=group.profile,
                        replica=replica,
                        resources=profile.resources,
                        max_price=price.amount,
                        denom=price.denom,
                        attributes=placement.attributes,
                        signed_by_any_of=placement.signed_by_any_of,
                        signed_by_all_of=placement.signed_by_all_of,
                        gpu_models=profile.gpu_models,
                        storage=storage,
                    )
                )
        if problems:
            raise ManifestError(problems)
        return tuple(specs)


# --------------------------------------------------------------------------------------------
# Loading YAML
# --------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *anchor" merges may repeat keys; that is their purpose
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def _load(source: str | bytes | Mapping[str, Any]) -> object:
    """Load YAML text (JSON is YAML) or pass a mapping through. Raises ManifestError."""
    if isinstance(source, Mapping):
        return source
    if isinstance(source, bytes | bytearray):
        try:
            source = bytes(source).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                [ManifestProblem("", f"not UTF-8 text (bad byte at offset {exc.start})")]
            ) from None
    if not isinstance(source, str):
        raise ManifestError(
            [ManifestProblem("", f"a manifest is YAML text or a mapping, not {_describe(source)}")]
        )
    try:
        return yaml.load(source, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "syntax error"
        raise ManifestError([ManifestProblem("", f"invalid YAML{where}: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([ManifestProblem("", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ManifestError([ManifestProblem("", "invalid YAML: nested too deeply")]) from None


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------

_TOP_FIELDS = ("version", "kind", "max_runtime", "services", "profiles", "deployment", "endpoints")
_SERVICE_FIELDS = (
    "image",
    "command",
    "args",
    "env",
    "expose",
    "params",
    "depends_on",
    "credentials",
    "files",
    "readOnlyRootFilesystem",
)
_FILE_FIELDS = ("sha256", "path")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXPOSE_FIELDS = ("port", "as", "proto", "to", "accept", "http_options")
_HTTP_OPTIONS_FIELDS = (
    "max_body_size",
    "read_timeout",
    "send_timeout",
    "next_tries",
    "next_timeout",
    "next_cases",
)
_TO_FIELDS = ("global", "service", "ip")
_PARAMS_FIELDS = ("storage", "permissions")
_PERMISSIONS_FIELDS = ("read",)
_ENDPOINT_FIELDS = ("kind",)
_MOUNT_FIELDS = ("mount", "readOnly")
_CREDENTIALS_FIELDS = ("host", "username", "password", "email")
_PROFILES_FIELDS = ("compute", "placement")
_RESOURCES_FIELDS = ("cpu", "memory", "storage", "gpu")
_VOLUME_FIELDS = ("name", "size", "attributes")
_VOLUME_ATTRIBUTE_FIELDS = ("persistent", "class")
_GPU_FIELDS = ("units", "attributes")
_GPU_MODEL_FIELDS = ("model", "ram", "interface")
_PLACEMENT_FIELDS = ("attributes", "signedBy", "pricing")
_SIGNED_BY_FIELDS = ("anyOf", "allOf")
_PRICE_FIELDS = ("denom", "amount")
_GROUP_FIELDS = ("profile", "count")

# A service name becomes part of a hostname (<service>-<id>.deployments.<domain>), so it is a
# DNS label, as Akash requires.
_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_HOST_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_ENV_NAME = re.compile(r"[^=\s]+")
_ENDPOINT_NAME = re.compile(r"[a-z][-_0-9a-z]+")  # Akash's rule for an endpoint's name
_AKASH_ADDRESS = re.compile(r"akash1[0-9a-z]{6,}")

# What Kova cannot honour, said once per field that asks for it (warnings).
_NO_IP_LEASES = (
    "Kova does not lease IP addresses: ignored (a port sent to this endpoint is published at "
    "its provider's address, at a port the provider picks)"
)
_NO_HTTP_OPTIONS = (
    "Kova's ingress does not apply http_options (body size, timeouts, retries): ignored"
)
_NO_PERMISSIONS = (
    "Kova has no lease permissions: ignored (the tenant reads its logs through the API)"
)
_NO_CREDENTIALS = (
    "Kova's providers run images their machines already have and do not log in to "
    "registries: the credentials are not used"
)
_DIGITS = re.compile(r"[0-9]{1,18}")


def _describe(value: object) -> str:
    """A short description of a wrong value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _scalar_text(value: object) -> str | None:
    """The text of a YAML scalar (``true`` for True, ``8080`` for 8080); None if not a scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _price_amount(value: object) -> int:
    """Read a price amount: a whole, positive number of micro-units. Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number of micro-units, got {_describe(value)}")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {_describe(value)}") from None
    if not amount.is_finite() or (amount and abs(amount.adjusted()) > 30):
        raise ValueError(f"out of range: {_describe(value)}")
    if amount <= 0:
        raise ValueError("must be greater than 0")
    if amount != amount.to_integral_value():
        raise ValueError(
            f"{value} is a fraction of a micro-unit: the amount is a whole number of the "
            "denomination's smallest unit per block"
        )
    return int(amount)


class _Checker:
    """Walks a loaded manifest, collecting every problem, and builds the model if there are none."""

    def __init__(self, accepted_denoms: Collection[str] | None, strict: bool = False) -> None:
        if isinstance(accepted_denoms, str):  # one denomination, not its characters
            accepted_denoms = (accepted_denoms,)
        self.accepted_denoms = None if accepted_denoms is None else tuple(accepted_denoms)
        self.strict = strict
        self.problems: list[ManifestProblem] = []
        self.warnings: list[ManifestProblem] = []
        self.endpoints: dict[str, bool] = {}  # declared IP endpoints: name -> used

    # ---- generic helpers -------------------------------------------------------------------

    def add(self, path: str, message: str) -> None:
        problem = ManifestProblem(path, message)
        if problem not in self.problems:
            self.problems.append(problem)

    def warn(self, path: str, message: str) -> None:
        warning = ManifestProblem(path, message)
        if warning not in self.warnings:
            self.warnings.append(warning)

    def unknown(self, path: str, key: object, fields: Collection[str]) -> None:
        """An unknown key: ignored with a warning, as Akash ignores it; a problem if strict."""
        if self.strict:
            self.add(path, _unknown_field(key, fields))
        else:
            self.warn(path, _unknown_field(key, fields, ignored=True))

    def mapping(
        self, value: object, path: str, fields: Collection[str] | None = None
    ) -> Mapping[Any, Any] | None:
        """``value`` if it is a mapping (its unknown keys reported), else None (reported)."""
        if not isinstance(value, Mapping):
            self.add(path, f"must be a mapping, got {_describe(value)}")
            return None
        if fields is not None:
            for key in value:
                if key not in fields:
                    self.unknown(_join(path, key), key, fields)
        return value

    def named(self, value: Mapping[Any, Any], path: str) -> list[tuple[str, Any]]:
        """The entries of a mapping of names; a name that is not a string is reported."""
        entries = []
        for key, item in value.items():
            if isinstance(key, str) and key:
                entries.append((key, item))
            else:
                self.add(
                    _join(path, key), f"a name must be a non-empty string, got {_describe(key)}"
                )
        return entries

    def required(self, value: Mapping[Any, Any], key: str, path: str, hint: str = "") -> Any:
        """``value[key]``, or None with a ``missing`` problem if it is absent or null."""
        item = value.get(key)
        if item is None:
            self.add(_join(path, key), f"missing{': ' + hint if hint else ''}")
        return item

    def string(self, value: object, path: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value.strip()
        self.add(path, f"must be a non-empty string, got {_describe(value)}")
        return None

    def text(self, value: object, path: str) -> str | None:
        """A scalar as text: strings as they are, numbers and booleans as YAML writes them."""
        text = _scalar_text(value)
        if text is None:
            self.add(path, f"must be a string, got {_describe(value)}")
        return text

    def boolean(self, value: object, path: str) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.add(path, f"must be true or false, got {_describe(value)}")
        return None

    def integer(self, value: object, path: str, low: int, high: int = MAX_AMOUNT) -> int | None:
        """A whole number from ``low`` to ``high`` (by default the largest that 64 bits hold:
        every number of a manifest is stored as one)."""
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
                value = int(value.strip())
            else:
                self.add(path, f"must be a whole number, got {_describe(value)}")
                return None
        if value < low or value > high:
            # a bound the field has of its own is said whole; the 64 bits only when passed
            bound = f"at least {low}" if high == MAX_AMOUNT else f"from {low} to {high}"
            if value > high == MAX_AMOUNT:
                bound = f"at most {high}"
            self.add(path, f"must be {bound}, got {value}")
            return None
        return value

    def texts(self, value: object, path: str, *, one_ok: bool = False) -> tuple[str, ...] | None:
        """A list of scalars as text (a single scalar too with ``one_ok``)."""
        if one_ok and not isinstance(value, list | tuple):
            text = self.text(value, path)
            return None if text is None else (text,)
        if not isinstance(value, list | tuple):
            self.add(path, f"must be a list, got {_describe(value)}")
            return None
        items = [self.text(item, _join(path, i)) for i, item in enumerate(value)]
        return None if any(t is None for t in items) else tuple(t for t in items if t is not None)

    def quantity(self, parse: Callable[[object], int], value: object, path: str) -> int | None:
        """A quantity read by ``parse``, no larger than 64 bits hold (it is stored as one)."""
        try:
            amount = parse(value)
        except ValueError as exc:
            self.add(path, str(exc))
            return None
        if amount > MAX_AMOUNT:
            self.add(path, f"{_describe(value)} is more than the largest amount, {MAX_AMOUNT}")
            return None
        return amount

    # ---- the manifest ----------------------------------------------------------------------

    def manifest(self, data: object) -> Manifest | None:
        if not isinstance(data, Mapping):
            self.add(
                "",
                "a manifest must be a mapping with version, services, profiles and deployment,"
                f" got {'an empty document' if data is None else _describe(data)}",
            )
            return None
        top = data
        self.mapping(top, "", _TOP_FIELDS)  # reports unknown top-level keys
        version = self.version(top.get("version"))
        kind, max_runtime = self.kind(top)
        self.declare_endpoints(top.get("endpoints"))

        services_raw = self.required(top, "services", "", "a manifest needs at least one service")
        services_map = self.mapping(services_raw, "services") if services_raw is not None else None
        service_names = (
            {name for name, _ in self.named(services_map, "services")}
            if services_map is not None
            else set()
        )
        services: dict[str, Service | None] = {}
        for name, item in self.named(services_map or {}, "services"):
            services[name] = self.service(name, item, service_names)

        profiles = self.required(
            top, "profiles", "", "a manifest needs profiles.compute and profiles.placement"
        )
        profiles_map = (
            self.mapping(profiles, "profiles", _PROFILES_FIELDS) if profiles is not None else None
        )
        compute: dict[str, ComputeProfile | None] = {}
        volumes: dict[str, set[str] | None] = {}
        placements: dict[str, Placement | None] = {}
        priced: dict[str, set[str] | None] = {}
        if profiles_map is not None:
            raw = self.required(profiles_map, "compute", "profiles")
            compute_map = self.mapping(raw, "profiles.compute") if raw is not None else None
            for name, item in self.named(compute_map or {}, "profiles.compute"):
                compute[name], volumes[name] = self.compute_profile(name, item)
            raw = self.required(profiles_map, "placement", "profiles")
            placement_map = self.mapping(raw, "profiles.placement") if raw is not None else None
            for name, item in self.named(placement_map or {}, "profiles.placement"):
                placements[name], priced[name] = self.placement(name, item, set(compute))

        groups = self.deployment(top, service_names, set(compute), placements, priced)
        self.check_mounts(services, groups, volumes, compute)
        deployment = top.get("deployment")
        for name in services if isinstance(deployment, Mapping) and deployment else ():
            if name not in deployment:  # as Akash, which refuses it: it would never run
                self.add(
                    f"services.{name}",
                    f"not deployed: add it to the deployment map (deployment.{name}."
                    "<placement>: {profile: ..., count: 1}) or remove it",
                )
        for name, used in self.endpoints.items():
            if not used:
                self.add(
                    f"endpoints.{name}",
                    "declared but never used: send a port to it (expose.to: [{global: true, "
                    f"ip: {name}}}]) or remove it",
                )

        if self.problems or version is None or kind is None:
            return None
        return Manifest(
            version=version,
            kind=kind,
            max_runtime=max_runtime,
            services=_frozen(services),
            compute_profiles=_frozen(compute),
            placements=_frozen(placements),
            groups=tuple(groups),
            warnings=tuple(self.warnings),
        )

    def declare_endpoints(self, value: object) -> None:
        """SDL's ``endpoints``: named IP addresses to lease (``kind: ip``), which Kova does not
        lease. Checked as Akash checks them (a name, the kind, each used), then ignored."""
        if value is None:
            return
        endpoints = self.mapping(value, "endpoints")
        for name, item in self.named(endpoints or {}, "endpoints"):
            path = f"endpoints.{name}"
            self.endpoints[name] = False
            if not _ENDPOINT_NAME.fullmatch(name):
                self.add(
                    path,
                    "an endpoint name is lowercase letters, digits, '-' and '_', starts with a "
                    "letter and has at least 2 characters",
                )
            entry = self.mapping(item, path, _ENDPOINT_FIELDS)
            if entry is None:
                continue
            kind = self.required(entry, "kind", path, "the kind of endpoint: kind: ip")
            if kind is not None and kind != "ip":
                self.add(f"{path}.kind", f"unknown endpoint kind {_describe(kind)} (SDL has: ip)")
            self.warn(path, _NO_IP_LEASES)

    def version(self, value: object) -> str | None:
        if value is None:
            self.add("version", 'missing: use version: "2.0"')
            return None
        text = _scalar_text(value) if isinstance(value, str | float) else None
        if text is not None and text.strip() in SUPPORTED_VERSIONS:
            return text.strip()
        supported = " or ".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
        self.add("version", f"unsupported version {_describe(value)} (use {supported})")
        return None

    def kind(self, top: Mapping[Any, Any]) -> tuple[str | None, int | None]:
        kind = top.get("kind", "deployment")
        if kind not in KINDS:
            self.add("kind", f"must be deployment or job, got {_describe(kind)}")
            return None, None
        raw = top.get("max_runtime")
        if kind == "deployment":
            if raw is not None:
                self.add("max_runtime", "only a job has a max_runtime (add kind: job)")
            return kind, None
        if raw is None:
            self.add("max_runtime", "missing: a job needs a max_runtime, e.g. 2h or 3600")
            return kind, None
        return kind, self.quantity(parse_duration, raw, "max_runtime")

    # ---- services --------------------------------------------------------------------------

    def service(self, name: str, value: object, names: set[str]) -> Service | None:
        path = f"services.{name}"
        if not _SERVICE_NAME.fullmatch(name):
            self.add(
                path,
                "a service name must be lowercase letters, digits and '-', start with a letter"
                " and have at most 63 characters (it becomes part of a hostname)",
            )
        svc = self.mapping(value, path, _SERVICE_FIELDS)
        if svc is None:
            return None
        image_raw = self.required(svc, "image", path, "every service needs an image")
        image = self.string(image_raw, f"{path}.image") if image_raw is not None else None
        command = args = ()
        if svc.get("command") is not None:
            command = self.texts(svc["command"], f"{path}.command", one_ok=True)
        if svc.get("args") is not None:
            args = self.texts(svc["args"], f"{path}.args", one_ok=True)
        env = self.env(svc.get("env"), f"{path}.env")
        expose: list[Expose | None] = []
        if svc.get("expose") is not None:
            raw = svc["expose"]
            if isinstance(raw, list | tuple):
                expose = [
                    self.expose(item, f"{path}.expose.{i}", names) for i, item in enumerate(raw)
                ]
            else:
                self.add(f"{path}.expose", f"must be a list of ports, got {_describe(raw)}")
        mounts = self.params(svc.get("params"), f"{path}.params")
        depends_on: tuple[str, ...] | None = ()
        if svc.get("depends_on") is not None:
            depends_on = self.texts(svc["depends_on"], f"{path}.depends_on", one_ok=True)
            for i, other in enumerate(depends_on or ()):
                if other == name:
                    self.add(f"{path}.depends_on.{i}", "a service cannot depend on itself")
                elif other not in names:
                    self.add(f"{path}.depends_on.{i}", f"no service named {other!r} in services")
        credentials = self.credentials(svc.get("credentials"), f"{path}.credentials")
        if credentials:
            self.warn(f"{path}.credentials", _NO_CREDENTIALS)
        files = self.files(svc.get("files"), f"{path}.files", mounts or ())
        read_only_root: bool | None = False
        if svc.get("readOnlyRootFilesystem") is not None:
            read_only_root = self.boolean(
                svc["readOnlyRootFilesystem"], f"{path}.readOnlyRootFilesystem"
            )
        if read_only_root and files and mounts is not None:
            # files are copied in before the container starts: onto a volume, since the root
            # filesystem refuses every write
            writable = [m.mount.rstrip("/") + "/" for m in mounts if not m.read_only]
            for i, placed in enumerate(files):
                if not any(placed.path.startswith(m) for m in writable):
                    self.add(
                        f"{path}.files.{i}.path",
                        "with readOnlyRootFilesystem a file is placed under a writable storage "
                        f"mount of the service ({', '.join(writable) or 'it has none'})",
                    )
                    files = None
        if (
            image is None
            or command is None
            or args is None
            or env is None
            or None in expose
            or mounts is None
            or depends_on is None
            or credentials is False
            or files is None
            or read_only_root is None
        ):
            return None
        return Service(
            name=name,
            image=image,
            command=command,
            args=args,
            env=_frozen(env),
            expose=tuple(e for e in expose if e is not None),
            storage_mounts=mounts,
            depends_on=depends_on,
            credentials=credentials or None,
            files=files,
            read_only_root=read_only_root,
        )

    def env(self, value: object, path: str) -> dict[str, str] | None:
        env: dict[str, str] = {}
        if value is None:
            return env
        ok = True
        if isinstance(value, Mapping):  # a convenience beyond SDL: KEY: value
            for key, item in value.items():
                text = "" if item is None else self.text(item, _join(path, key))
                if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                    self.add(_join(path, key), "a variable name must be a non-empty string")
                    ok = False
                elif text is None:
                    ok = False
                else:
                    env[key] = text
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                # "KEY" without "=" sets KEY to the empty string, as Akash's provider does
                key, _, text = item.partition("=") if isinstance(item, str) else ("", "", "")
                if not _ENV_NAME.fullmatch(key):
                    self.add(f"{path}.{i}", f"must be KEY=value, got {_describe(item)}")
                    ok = False
                else:
                    env[key] = text
        else:
            self.add(path, f"must be a list of KEY=value, got {_describe(value)}")
            ok = False
        return env if ok else None

    def expose(self, value: object, path: str, names: set[str]) -> Expose | None:
        exp = self.mapping(value, path, _EXPOSE_FIELDS)
        if exp is None:
            return None
        port_raw = self.required(exp, "port", path, "the container port to expose")
        port = self.integer(port_raw, f"{path}.port", 1, 65535) if port_raw is not None else None
        as_port = port
        if exp.get("as") is not None:
            as_port = self.integer(exp["as"], f"{path}.as", 1, 65535)
        proto: str | None = "tcp"
        if exp.get("proto") is not None:
            proto = _scalar_text(exp["proto"])
            proto = proto.strip().lower() if proto else None
            if proto not in ("tcp", "udp"):
                self.add(f"{path}.proto", f"must be tcp or udp, got {_describe(exp['proto'])}")
                proto = None
        is_global = False
        to_services: list[str] = []
        ok = True
        if exp.get("to") is not None:
            raw = exp["to"]
            if not isinstance(raw, list | tuple):
                self.add(f"{path}.to", f"must be a list, got {_describe(raw)}")
                ok = False
            for i, item in enumerate(raw if isinstance(raw, list | tuple) else ()):
                ipath = f"{path}.to.{i}"
                to = self.mapping(item, ipath, _TO_FIELDS)
                if to is None:
                    ok = False
                    continue
                if to.get("global") is not None:
                    flag = self.boolean(to["global"], f"{ipath}.global")
                    ok = ok and flag is not None
                    is_global = is_global or bool(flag)
                if to.get("service") is not None:
                    other = self.string(to["service"], f"{ipath}.service")
                    if other is not None and other not in names:
                        self.add(f"{ipath}.service", f"no service named {other!r} in services")
                    if other is None or other not in names:
                        ok = False
                    else:
                        to_services.append(other)
                if to.get("ip") is not None:  # an endpoint's name (a leased IP): checked, ignored
                    ok = self.endpoint_use(to, ipath) and ok
        accept: list[str] = []
        if exp.get("accept") is not None:
            hosts = self.texts(exp["accept"], f"{path}.accept", one_ok=True)
            for i, host in enumerate(hosts or ()):
                name = host.strip().lower().rstrip(".")
                labels = name[2:].split(".") if name.startswith("*.") else name.split(".")
                if len(name) > 253 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
                    self.add(f"{path}.accept.{i}", f"not a hostname: {_describe(host)}")
                    ok = False
                else:
                    accept.append(name)
            ok = ok and hosts is not None
        if exp.get("http_options") is not None:  # ingress tuning: checked, not applied
            options = self.mapping(
                exp["http_options"], f"{path}.http_options", _HTTP_OPTIONS_FIELDS
            )
            ok = options is not None and ok
            self.warn(f"{path}.http_options", _NO_HTTP_OPTIONS)
        if port is None or as_port is None or proto is None or not ok:
            return None
        return Expose(
            port=port,
            as_port=as_port,
            proto=proto,
            global_=is_global,
            to_services=tuple(to_services),
            accept=tuple(accept),
        )

    def endpoint_use(self, to: Mapping[Any, Any], path: str) -> bool:
        """``expose.to.ip``: the name of a declared endpoint, on a global exposure (as Akash
        requires). False if it is not (reported)."""
        name = self.string(to["ip"], f"{path}.ip")
        if name is None:
            return False
        ok = True
        if name not in self.endpoints:
            self.add(f"{path}.ip", f"no endpoint named {name!r} in endpoints")
            ok = False
        else:
            self.endpoints[name] = True
        if to.get("global") is not True:
            self.add(f"{path}.global", "an IP endpoint is reached from outside: add global: true")
            ok = False
        return ok

    def params(self, value: object, path: str) -> tuple[StorageMount, ...] | None:
        if value is None:
            return ()
        params = self.mapping(value, path, _PARAMS_FIELDS)
        if params is None:
            return None
        if params.get("permissions") is not None:  # SDL 2.1 lease permissions: not honoured
            permissions = self.mapping(
                params["permissions"], f"{path}.permissions", _PERMISSIONS_FIELDS
            )
            if permissions is not None and permissions.get("read") is not None:
                self.texts(permissions["read"], f"{path}.permissions.read", one_ok=True)
            self.warn(f"{path}.permissions", _NO_PERMISSIONS)
        if params.get("storage") is None:
            return ()
        storage = self.mapping(params["storage"], f"{path}.storage")
        if storage is None:
            return None
        mounts: list[StorageMount] = []
        ok = True
        seen: dict[str, str] = {}
        for volume, item in self.named(storage, f"{path}.storage"):
            vpath = f"{path}.storage.{volume}"
            entry = self.mapping(item, vpath, _MOUNT_FIELDS)
            if entry is None:
                ok = False
                continue
            raw = self.required(entry, "mount", vpath, "an absolute path such as /data")
            mount = self.string(raw, f"{vpath}.mount") if raw is not None else None
            if mount is not None and not mount.startswith("/"):
                self.add(f"{vpath}.mount", f"must be an absolute path, got {_describe(mount)}")
                mount = None
            elif mount is not None and mount in seen:
                self.add(f"{vpath}.mount", f"{mount} is already the mount of {seen[mount]!r}")
                mount = None
            read_only: bool | None = False
            if entry.get("readOnly") is not None:
                read_only = self.boolean(entry["readOnly"], f"{vpath}.readOnly")
            if mount is None or read_only is None:
                ok = False
                continue
            seen[mount] = volume
            mounts.append(StorageMount(volume=volume, mount=mount, read_only=read_only))
        return tuple(mounts) if ok else None

    def files(
        self, value: object, path: str, mounts: tuple[StorageMount, ...]
    ) -> tuple[FileMount, ...] | None:
        """Kova's uploaded files, each at its own absolute path (not a volume's mount)."""
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            self.add(path, f"must be a list of {{sha256, path}}, got {_describe(value)}")
            return None
        found: list[FileMount] = []
        ok = True
        seen = {m.mount for m in mounts}
        for i, item in enumerate(value):
            ipath = f"{path}.{i}"
            entry = self.mapping(item, ipath, _FILE_FIELDS)
            if entry is None:
                ok = False
                continue
            raw_hash = self.required(entry, "sha256", ipath, "the SHA-256 of an uploaded file")
            digest = self.string(raw_hash, f"{ipath}.sha256") if raw_hash is not None else None
            if digest is not None and not _SHA256.fullmatch(digest):
                self.add(f"{ipath}.sha256", "must be 64 lowercase hexadecimal digits")
                digest = None
            raw_path = self.required(entry, "path", ipath, "an absolute path such as /input.csv")
            where = self.string(raw_path, f"{ipath}.path") if raw_path is not None else None
            if where is not None and (not where.startswith("/") or where.endswith("/")):
                self.add(f"{ipath}.path", f"must be an absolute file path, got {_describe(where)}")
                where = None
            elif where is not None and where in seen:
                self.add(f"{ipath}.path", f"{where} is already used by another file or volume")
                where = None
            if digest is None or where is None:
                ok = False
                continue
            seen.add(where)
            found.append(FileMount(sha256=digest, path=where))
        return tuple(found) if ok else None

    def credentials(self, value: object, path: str) -> RegistryCredentials | bool | None:
        """The credentials, None if absent, False if invalid (reported)."""
        if value is None:
            return None
        creds = self.mapping(value, path, _CREDENTIALS_FIELDS)
        if creds is None:
            return False
        found: dict[str, str | None] = {}
        for key in ("host", "username", "password"):
            raw = self.required(creds, key, path)
            found[key] = self.text(raw, f"{path}.{key}") if raw is not None else None
            if found[key] is not None and not found[key].strip():
                self.add(f"{path}.{key}", "must not be empty")
                found[key] = None
        email = self.text(creds["email"], f"{path}.email") if creds.get("email") else None
        host, username, password = found["host"], found["username"], found["password"]
        if host is None or username is None or password is None:
            return False
        return RegistryCredentials(host=host, username=username, password=password, email=email)

    # ---- compute profiles ------------------------------------------------------------------

    def compute_profile(
        self, name: str, value: object
    ) -> tuple[ComputeProfile | None, set[str] | None]:
        """The profile (None if invalid) and its volume names (None if they are unknown)."""
        path = f"profiles.compute.{name}"
        profile = self.mapping(value, path, ("resources",))
        if profile is None:
            return None, None
        raw = self.required(profile, "resources", path, "cpu, memory and storage")
        res = self.mapping(raw, f"{path}.resources", _RESOURCES_FIELDS) if raw is not None else None
        if res is None:
            return None, None
        path = f"{path}.resources"
        cpu = self.sized(res, "cpu", "units", parse_cpu, path, "e.g. cpu: {units: 0.5}")
        memory = self.sized(res, "memory", "size", parse_size, path, "e.g. memory: {size: 512Mi}")
        volumes, names = self.storage(res.get("storage"), f"{path}.storage")
        gpu = self.gpu(res.get("gpu"), f"{path}.gpu")
        if cpu is None or memory is None or volumes is None or None in volumes or gpu is None:
            return None, names
        units, models = gpu
        storage = tuple(v for v in volumes if v is not None)
        if sum(v.size for v in storage) > MAX_AMOUNT:
            self.add(f"{path}.storage", f"the volumes add up to more than {MAX_AMOUNT} bytes")
            return None, names
        resources = Resources(
            cpu=cpu, memory=memory, storage=sum(v.size for v in storage), gpu=units
        )
        profile = ComputeProfile(name=name, resources=resources, storage=storage, gpu_models=models)
        return profile, names

    def sized(
        self,
        res: Mapping[Any, Any],
        key: str,
        amount_key: str,
        parse: Callable[[object], int],
        path: str,
        hint: str,
    ) -> int | None:
        """``res.<key>.<amount_key>`` parsed (cpu units, memory size); ``attributes`` accepted."""
        raw = self.required(res, key, path, hint)
        if raw is None:
            return None
        section = self.mapping(raw, f"{path}.{key}", (amount_key, "attributes"))
        if section is None:
            return None
        attributes = section.get("attributes")  # e.g. cpu arch: not matched by providers
        if attributes is not None and self.mapping(attributes, f"{path}.{key}.attributes"):
            self.warn(
                f"{path}.{key}.attributes",
                f"Kova's providers are not matched on {key} attributes: ignored",
            )
        amount = self.required(section, amount_key, f"{path}.{key}", hint)
        if amount is None:
            return None
        return self.quantity(parse, amount, f"{path}.{key}.{amount_key}")

    def storage(
        self, value: object, path: str
    ) -> tuple[list[StorageVolume | None] | None, set[str] | None]:
        """The volumes (an invalid one as None) and their names; (None, None) if not a list."""
        if value is None:
            return [], set()
        if isinstance(value, Mapping):
            entries = [(path, value)]
        elif isinstance(value, list | tuple):
            entries = [(f"{path}.{i}", item) for i, item in enumerate(value)]
        else:
            self.add(path, f"must be a mapping or a list of volumes, got {_describe(value)}")
            return None, None
        volumes: list[StorageVolume | None] = []
        seen: set[str] = set()
        for vpath, item in entries:
            vol = self.mapping(item, vpath, _VOLUME_FIELDS)
            if vol is None:
                volumes.append(None)
                continue
            name: str | None = "default"
            if vol.get("name") is not None:
                name = self.string(vol["name"], f"{vpath}.name")
            if name is not None and name in seen:
                self.add(f"{vpath}.name", f"duplicate storage volume name {name!r}")
            elif name is not None:
                seen.add(name)
            raw = self.required(vol, "size", vpath, "e.g. size: 10Gi")
            size = self.quantity(parse_size, raw, f"{vpath}.size") if raw is not None else None
            persistent: bool | None = False
            storage_class: str | None = None
            attrs = vol.get("attributes")
            attrs = (
                self.mapping(attrs, f"{vpath}.attributes", _VOLUME_ATTRIBUTE_FIELDS)
                if (attrs is not None)
                else {}
            )
            if attrs is None:
                volumes.append(None)
                continue
            apath = f"{vpath}.attributes"
            if attrs.get("persistent") is not None:
                persistent = self.boolean(attrs["persistent"], f"{apath}.persistent")
            if attrs.get("class") is not None:
                storage_class = _scalar_text(attrs["class"])
                if storage_class not in STORAGE_CLASSES:
                    self.add(
                        f"{apath}.class",
                        f"unknown storage class {_describe(attrs['class'])} (use "
                        f"{', '.join(STORAGE_CLASSES[:-1])} or {STORAGE_CLASSES[-1]})",
                    )
                    storage_class = None
                elif storage_class == "ram" and persistent:
                    self.add(
                        f"{apath}.persistent",
                        "a ram volume lives in memory and cannot be persistent",
                    )
                    persistent = None
            if (
                name is None
                or size is None
                or persistent is None
                or (attrs.get("class") is not None and storage_class is None)
            ):
                volumes.append(None)
                continue
            volumes.append(
                StorageVolume(
                    name=name, size=size, persistent=persistent, storage_class=storage_class
                )
            )
        return volumes, seen

    def gpu(self, value: object, path: str) -> tuple[int, tuple[GpuModel, ...]] | None:
        if value is None:
            return 0, ()
        gpu = self.mapping(value, path, _GPU_FIELDS)
        if gpu is None:
            return None
        raw = self.required(gpu, "units", path, "the number of GPUs, e.g. units: 1")
        units = self.integer(raw, f"{path}.units", 0) if raw is not None else None
        models: list[GpuModel] = []
        ok = True
        attrs = None
        if gpu.get("attributes") is not None:
            attrs = self.mapping(gpu["attributes"], f"{path}.attributes", ("vendor",))
            ok = attrs is not None
        vendors = None
        if attrs is not None and attrs.get("vendor") is not None:
            vendors = self.mapping(attrs["vendor"], f"{path}.attributes.vendor")
            ok = ok and vendors is not None
        for written, listed in self.named(vendors or {}, f"{path}.attributes.vendor"):
            vpath = f"{path}.attributes.vendor.{written}"
            vendor = written.strip().lower()  # GPU names are matched in lower case
            if listed is None or listed == []:
                models.append(GpuModel(vendor=vendor))
                continue
            if not isinstance(listed, list | tuple):
                self.add(vpath, f"must be a list of models, got {_describe(listed)}")
                ok = False
                continue
            for i, item in enumerate(listed):
                entry = self.mapping(item, f"{vpath}.{i}", _GPU_MODEL_FIELDS)
                if entry is None:
                    ok = False
                    continue
                found: dict[str, str | None] = {}
                for key in _GPU_MODEL_FIELDS:
                    found[key] = None
                    if entry.get(key) is not None:
                        found[key] = self.text(entry[key], f"{vpath}.{i}.{key}")
                        ok = ok and found[key] is not None
                model, interface = found["model"], found["interface"]
                models.append(
                    GpuModel(
                        vendor=vendor,
                        model=model.strip().lower() if model else None,
                        ram=found["ram"],
                        interface=interface.strip().lower() if interface else None,
                    )
                )
        if units == 0 and gpu.get("attributes") is not None:
            self.add(
                f"{path}.attributes",
                "GPU attributes with units: 0 ask for no GPU: remove them or ask for units",
            )
            ok = False
        if units and vendors is None and ok:
            self.add(
                f"{path}.attributes" if attrs is None else f"{path}.attributes.vendor",
                "missing: a GPU needs a vendor, e.g. attributes: {vendor: {nvidia: }}",
            )
            ok = False
        elif units and not models and ok:
            self.add(f"{path}.attributes.vendor", "must name at least one vendor, e.g. nvidia")
            ok = False
        if units is None or not ok:
            return None
        return units, tuple(models)

    # ---- placements ------------------------------------------------------------------------

    def placement(
        self, name: str, value: object, profiles: set[str]
    ) -> tuple[Placement | None, set[str] | None]:
        """The placement (None if invalid) and the profiles it prices (None if unknown)."""
        path = f"profiles.placement.{name}"
        place = self.mapping(value, path, _PLACEMENT_FIELDS)
        if place is None:
            return None, None
        ok = True
        attributes: dict[str, str] = {}
        if place.get("attributes") is not None:
            attrs = self.mapping(place["attributes"], f"{path}.attributes")
            ok = attrs is not None
            for key, item in (attrs or {}).items():
                text = self.text(item, f"{path}.attributes.{key}")
                if text is None:
                    ok = False
                else:
                    attributes[str(key)] = text
        any_of: tuple[str, ...] | None = ()
        all_of: tuple[str, ...] | None = ()
        if place.get("signedBy") is not None:
            signed = self.mapping(place["signedBy"], f"{path}.signedBy", _SIGNED_BY_FIELDS)
            if signed is None:
                ok = False
            else:
                if signed.get("anyOf") is not None:
                    any_of = self.texts(signed["anyOf"], f"{path}.signedBy.anyOf", one_ok=True)
                if signed.get("allOf") is not None:
                    all_of = self.texts(signed["allOf"], f"{path}.signedBy.allOf", one_ok=True)
                for key, names in (("anyOf", any_of), ("allOf", all_of)):
                    for i, who in enumerate(names or ()):
                        if _AKASH_ADDRESS.fullmatch(who):
                            self.warn(
                                f"{path}.signedBy.{key}.{i}",
                                "an Akash account address: Kova's auditors are named "
                                "auditor:<id>, so no Kova provider is audited by it",
                            )
        raw = self.required(place, "pricing", path, "a price per block for each compute profile")
        pricing = self.mapping(raw, f"{path}.pricing") if raw is not None else None
        prices: dict[str, Price] = {}
        for profile, item in self.named(pricing or {}, f"{path}.pricing"):
            ppath = f"{path}.pricing.{profile}"
            if profile not in profiles:
                self.add(ppath, f"no compute profile named {profile!r} in profiles.compute")
                ok = False
            price = self.price(item, ppath)
            if price is None:
                ok = False
            else:
                prices[profile] = price
        priced = None if pricing is None else {str(key) for key in pricing}
        if not ok or pricing is None or any_of is None or all_of is None:
            return None, priced
        return Placement(
            name=name,
            attributes=_frozen(attributes),
            signed_by_any_of=any_of,
            signed_by_all_of=all_of,
            pricing=_frozen(prices),
        ), priced

    def price(self, value: object, path: str) -> Price | None:
        entry = self.mapping(value, path, _PRICE_FIELDS)
        if entry is None:
            return None
        raw = self.required(entry, "denom", path, "the denomination, e.g. uakt")
        denom = self.string(raw, f"{path}.denom") if raw is not None else None
        accepted = self.accepted_denoms
        if denom is not None and accepted is not None and denom not in accepted:
            self.add(
                f"{path}.denom",
                f"denomination {denom!r} is not accepted (accepted: {', '.join(accepted)})",
            )
            denom = None
        raw = self.required(entry, "amount", path, "micro-units of the denomination per block")
        amount = self.quantity(_price_amount, raw, f"{path}.amount") if raw is not None else None
        if denom is None or amount is None:
            return None
        return Price(denom=denom, amount=amount)

    # ---- the deployment map ----------------------------------------------------------------

    def deployment(
        self,
        top: Mapping[Any, Any],
        services: set[str],
        profiles: set[str],
        placements: Mapping[str, Placement | None],
        priced: Mapping[str, set[str] | None],
    ) -> list[DeploymentGroup]:
        raw = self.required(
            top,
            "deployment",
            "",
            "map each service to a placement, e.g. "
            "deployment: {web: {anywhere: {profile: web, count: 1}}}",
        )
        deployment = self.mapping(raw, "deployment") if raw is not None else None
        if deployment is None:
            return []
        groups: list[DeploymentGroup] = []
        entries = 0
        for service, value in self.named(deployment, "deployment"):
            path = f"deployment.{service}"
            if service not in services:
                self.add(path, f"no service named {service!r} in services")
            by_placement = self.mapping(value, path)
            if by_placement is not None and not by_placement:
                self.add(path, "names no placement, e.g. anywhere: {profile: web, count: 1}")
            for placement, item in self.named(by_placement or {}, path):
                entries += 1
                gpath = f"{path}.{placement}"
                if placement not in placements:
                    self.add(gpath, f"no placement named {placement!r} in profiles.placement")
                group = self.mapping(item, gpath, _GROUP_FIELDS)
                if group is None:
                    continue
                raw = self.required(group, "profile", gpath, "the name of a compute profile")
                profile = self.string(raw, f"{gpath}.profile") if raw is not None else None
                if profile is not None and profile not in profiles:
                    self.add(
                        f"{gpath}.profile",
                        f"no compute profile named {profile!r} in profiles.compute",
                    )
                    profile = None
                prices = priced.get(placement)
                if profile is not None and prices is not None and profile not in prices:
                    self.add(
                        f"profiles.placement.{placement}.pricing.{profile}",
                        f"missing: {gpath} deploys profile {profile!r} with this placement",
                    )
                raw = self.required(group, "count", gpath, "the number of replicas, e.g. 1")
                count = self.integer(raw, f"{gpath}.count", 1) if raw is not None else None
                if profile is not None and count is not None:
                    groups.append(
                        DeploymentGroup(
                            service=service, placement=placement, profile=profile, count=count
                        )
                    )
        if entries == 0:
            self.add("deployment", "deploys nothing: map at least one service to a placement")
        return groups

    def check_mounts(
        self,
        services: Mapping[str, Service | None],
        groups: list[DeploymentGroup],
        volumes: Mapping[str, set[str] | None],
        profiles: Mapping[str, ComputeProfile | None],
    ) -> None:
        """Each ``params.storage.<volume>`` must name a volume of every profile the service uses,
        and each persistent volume of the profile must be mounted (as Akash requires)."""
        for group in groups:
            service = services.get(group.service)
            names = volumes.get(group.profile)
            if service is None or names is None:
                continue
            profile = profiles.get(group.profile)
            mounted = {m.volume for m in service.storage_mounts}
            for volume in profile.storage if profile is not None else ():
                if volume.persistent and volume.name not in mounted:
                    self.add(
                        f"services.{group.service}.params.storage.{volume.name}",
                        f"missing: compute profile {group.profile!r} has the persistent volume "
                        f"{volume.name!r}, which needs a mount, e.g. mount: /data",
                    )
            for mount in service.storage_mounts:
                if mount.volume not in names:
                    have = ", ".join(sorted(names)) or "none"
                    self.add(
                        f"services.{group.service}.params.storage.{mount.volume}",
                        f"compute profile {group.profile!r} has no storage volume "
                        f"{mount.volume!r} (it has: {have})",
                    )


def _unknown_field(key: object, fields: Collection[str], *, ignored: bool = False) -> str:
    what = "unknown field, ignored" if ignored else "unknown field"
    close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
    if close:
        return f"{what} (did you mean {close[0]!r}?)"
    return f"{what} (expected one of: {', '.join(fields)})"


def parse_manifest(
    source: str | bytes | Mapping[str, Any],
    *,
    accepted_denoms: Collection[str] | None = None,
    strict: bool = False,
) -> Manifest:
    """Parse and check a manifest: Akash SDL 2.0 (or 2.1) YAML or JSON text, or a loaded mapping.

    ``accepted_denoms`` limits the denominations prices may use (``None``: any). An unknown
    field is ignored with a warning (:attr:`Manifest.warnings`), as Akash ignores it; with
    ``strict`` it is a problem. Raises :class:`ManifestError` listing every problem found, each
    at its field's dotted path (and the warnings, in its ``warnings``): YAML syntax, missing
    (or, strict, unknown) fields, bad values, and references to services, placements, profiles,
    prices, storage volumes or endpoints that the manifest does not define.
    """
    data = _load(source)
    checker = _Checker(accepted_denoms, strict)
    manifest = checker.manifest(data)
    if checker.problems or manifest is None:
        raise ManifestError(checker.problems, checker.warnings)
    return manifest
