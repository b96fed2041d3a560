"""What one order asks for: the bridge between a parsed manifest and the market.

A manifest yields one :class:`OrderSpec` per replica; the market turns each into an order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._errors import ManifestError, ManifestProblem
from ._resources import Resources

__all__ = [
    "GpuModel",
    "OrderSpec",
    "StorageVolume",
    "audit_voided_by",
    "deployment_denom",
    "provider_matches",
    "spec_from_record",
    "spec_record",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageVolume:
    """One named storage volume of a compute profile (SDL ``storage``; unnamed is ``default``)."""

    name: str = "default"
    size: int  # bytes
    persistent: bool = False
    storage_class: str | None = None
    mount: str | None = None  # from the service's params.storage.<name>.mount
    read_only: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuModel:
    """A GPU the order accepts: a vendor and one model (``None``: any of the vendor's)."""

    vendor: str
    model: str | None = None
    ram: str | None = None
    interface: str | None = None

    def key(self) -> str:
        """``vendor/model`` (``vendor/*`` for any model): how providers list their GPUs."""
        return f"{self.vendor}/{self.model or '*'}"


def _frozen_map(value: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderSpec:
    """One replica of one service: the resources, placement and price an order asks for.

    ``max_price`` is micro-units of ``denom`` per block. ``attributes`` must all be present, with
    equal values, among a provider's attributes; ``signed_by_all_of`` must all be auditors of the
    provider and, if non-empty, at least one of ``signed_by_any_of`` must be. If ``resources.gpu``
    is positive, the provider must have one of ``gpu_models``.
    """

    service: str
    placement: str
    profile: str
    replica: int  # 0-based index within the service/placement group
    resources: Resources
    max_price: int
    denom: str
    attributes: Mapping[str, str] = field(default_factory=_frozen_map)
    signed_by_any_of: tuple[str, ...] = ()
    signed_by_all_of: tuple[str, ...] = ()
    gpu_models: tuple[GpuModel, ...] = ()
    storage: tuple[StorageVolume, ...] = ()


def provider_matches(
    spec: OrderSpec,
    attributes: Mapping[str, str],
    auditors: frozenset[str] = frozenset(),
    gpu_models: frozenset[str] = frozenset(),
) -> str | None:
    """Check a provider against an order's placement: ``None`` if it matches, else the reason.

    ``gpu_models`` are the provider's GPUs as ``vendor/model`` keys.
    """
    for key, wanted in spec.attributes.items():
        have = attributes.get(key)
        if have != wanted:
            return f"attribute {key}={wanted} required, provider has {key}={have}"
    missing = [a for a in spec.signed_by_all_of if a not in auditors]
    if missing:
        return f"not signed by {', '.join(missing)}"
    if spec.signed_by_any_of and not any(a in auditors for a in spec.signed_by_any_of):
        return f"not signed by any of {', '.join(spec.signed_by_any_of)}"
    if spec.resources.gpu > 0 and spec.gpu_models:
        vendors_any = {g.vendor for g in spec.gpu_models if g.model is None}
        keys = {g.key() for g in spec.gpu_models if g.model is not None}
        ok = any(k in keys or k.split("/", 1)[0] in vendors_any for k in gpu_models)
        if not ok:
            return "no GPU of the required vendor/model"
    return None


def audit_voided_by(signed: Mapping[str, str], registered: Mapping[str, str]) -> list[str]:
    """The attributes an audit signed (names, sorted) whose value the provider no longer
    registers. An audit stands, and its auditor counts among the provider's auditors for
    placement's ``signedBy``, while this is empty; an audit that signed nothing always does."""
    return sorted(key for key, value in signed.items() if registered.get(key) != value)


def deployment_denom(
    specs: tuple[OrderSpec, ...], accepted_denoms: Collection[str] | None = None
) -> str | None:
    """The one denomination a deployment's orders are priced in (``None`` for no orders).

    Raises :class:`ManifestError` if the orders use several denominations, or one that is not
    in ``accepted_denoms`` (``None``: any is accepted).
    """
    denoms = {spec.denom for spec in specs}
    problems = []
    if accepted_denoms is not None:
        for spec in specs:
            if spec.denom not in accepted_denoms:
                problems.append(
                    ManifestProblem(
                        f"profiles.placement.{spec.placement}.pricing.{spec.profile}.denom",
                        f"{spec.denom!r} is not accepted by this network"
                        f" (accepted: {', '.join(sorted(accepted_denoms))})",
                    )
                )
    if len(denoms) > 1:
        problems.append(
            ManifestProblem(
                "profiles.placement",
                "all prices of one deployment must share a denomination,"
                f" found {', '.join(sorted(denoms))}",
            )
        )
    if problems:
        raise ManifestError(sorted(set(problems), key=str))
    return next(iter(denoms), None)


def spec_record(spec: OrderSpec) -> dict[str, object]:
    """An order spec as a plain JSON-able record (:func:`spec_from_record` reads it back): what
    a driver stores with an order, and what a polling provider is shown of one."""
    r = spec.resources
    return {
        "service": spec.service,
        "placement": spec.placement,
        "profile": spec.profile,
        "replica": spec.replica,
        "resources": {"cpu": r.cpu, "memory": r.memory, "storage": r.storage, "gpu": r.gpu},
        "max_price": spec.max_price,
        "denom": spec.denom,
        "attributes": dict(spec.attributes),
        "signed_by_any_of": list(spec.signed_by_any_of),
        "signed_by_all_of": list(spec.signed_by_all_of),
        "gpu_models": [
            {"vendor": g.vendor, "model": g.model, "ram": g.ram, "interface": g.interface}
            for g in spec.gpu_models
        ],
        "storage": [
            {
                "name": v.name, "size": v.size, "persistent": v.persistent,
                "storage_class": v.storage_class, "mount": v.mount, "read_only": v.read_only,
            }
            for v in spec.storage
        ],
    }  # fmt: skip


def spec_from_record(record: Mapping[str, object]) -> OrderSpec:
    """The order spec a :func:`spec_record` describes. Raises ``KeyError``, ``TypeError`` or
    ``ValueError`` for a record it did not make."""
    r: dict[str, object] = dict(record)
    res = r["resources"]
    if not isinstance(res, Mapping):
        raise TypeError("resources must be an object")
    values = [res.get(k, 0) for k in ("cpu", "memory", "storage", "gpu")]
    if not all(type(v) is int for v in values):
        raise TypeError("resources must be integers")
    models = r.get("gpu_models", [])
    volumes = r.get("storage", [])
    attributes = r.get("attributes", {})
    if not isinstance(models, list) or not isinstance(volumes, list):
        raise TypeError("gpu_models and storage must be lists")
    if not isinstance(attributes, Mapping):
        raise TypeError("attributes must be an object")
    max_price = r["max_price"]
    if type(max_price) is not int:
        raise TypeError("max_price must be an integer")
    return OrderSpec(
        service=str(r["service"]),
        placement=str(r["placement"]),
        profile=str(r["profile"]),
        replica=int(str(r["replica"])),
        resources=Resources(*values),
        max_price=max_price,
        denom=str(r["denom"]),
        attributes=_frozen_map({str(k): str(v) for k, v in attributes.items()}),
        signed_by_any_of=tuple(str(a) for a in _strings(r.get("signed_by_any_of", []))),
        signed_by_all_of=tuple(str(a) for a in _strings(r.get("signed_by_all_of", []))),
        gpu_models=tuple(GpuModel(**g) for g in models),
        storage=tuple(StorageVolume(**v) for v in volumes),
    )


def _strings(value: object) -> list[object]:
    if not isinstance(value, list):
        raise TypeError("signed_by_any_of and signed_by_all_of must be lists")
    return value
