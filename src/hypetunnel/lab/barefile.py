"""The file of `lab up --bare FILE`: which bare hosts to build.

Either an intent file (its `hypervisors:` become the hosts, with their underlay addresses and
the fabric's underlay MTU) or a plain host list:

    hosts:
      - name: hv1
      - name: hv2
        underlay_ip: 172.31.0.50   # optional; default 172.31.0.10+i
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import yaml

from hypetunnel.errors import FieldError, IntentInvalid
from hypetunnel.lab.netns import check_hypervisor_name
from hypetunnel.lab.proc import LabError
from hypetunnel.model.loader import load_intent_file

# Names the bare lab keeps for itself inside the lab's namespace prefix.
RESERVED_HOST_NAMES = ("op",)  # the operator's namespace
HOST_KEYS = ("name", "underlay_ip")


@dataclass(frozen=True)
class BareHostSpec:
    name: str
    underlay_ip: str | None = None


@dataclass(frozen=True)
class BareLabSpec:
    hosts: list[BareHostSpec]
    underlay_mtu: int = 1500


def check_bare_host_name(name: str) -> str:
    """A lab hypervisor's name rules, and not a name the bare lab uses itself."""
    check_hypervisor_name(name)
    if name in RESERVED_HOST_NAMES:
        raise LabError(f"host name {name!r} is reserved (the operator's namespace)")
    return name


def load_bare_file(path: Path) -> BareLabSpec:
    """Parse FILE; every error names the file and the field (IntentInvalid)."""
    source = str(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise IntentInvalid([FieldError("", f"cannot read the file: {e}")], source) from e
    if not isinstance(doc, dict) or not ({"hosts", "hypervisors"} & doc.keys()):
        raise IntentInvalid([FieldError("hosts", "missing: the file must be a mapping with "
                                        "'hosts' (a list of {name: ...}) or an intent file "
                                        "with 'hypervisors'")], source)
    key = "hosts" if "hosts" in doc else "hypervisors"
    if key == "hosts":
        errors, spec = _host_list(doc)
    else:
        intent = load_intent_file(path)
        spec = BareLabSpec([BareHostSpec(h.name, str(h.underlay_ip) if h.underlay_ip else None)
                            for h in intent.hypervisors], intent.fabric.underlay_mtu)
        errors = []
    errors += _check_names(spec.hosts, key)
    if not errors and not spec.hosts:
        errors = [FieldError(key, "no hosts: a bare lab needs at least one")]
    if errors:
        raise IntentInvalid(errors, source)
    return spec


def _host_list(doc: dict[Any, Any]) -> tuple[list[FieldError], BareLabSpec]:
    errors = [FieldError(str(k), "unknown key (expected only 'hosts')")
              for k in doc if k != "hosts"]
    hosts = doc["hosts"]
    if not isinstance(hosts, list):
        return [*errors, FieldError("hosts", "must be a list of {name: ...}")], BareLabSpec([])
    specs: list[BareHostSpec] = []
    for i, entry in enumerate(hosts):
        where = f"hosts[{i}]"
        if not isinstance(entry, dict):
            errors.append(FieldError(where, "must be a mapping with a 'name'"))
            continue
        errors += [FieldError(f"{where}.{k}", f"unknown key (expected {', '.join(HOST_KEYS)})")
                   for k in entry if k not in HOST_KEYS]
        name = entry.get("name")
        if not isinstance(name, str):
            errors.append(FieldError(f"{where}.name", "missing or not a string"))
            continue
        address = entry.get("underlay_ip")
        if address is not None:
            try:
                address = str(IPv4Address(str(address)))
            except ValueError:
                errors.append(FieldError(f"{where}.underlay_ip",
                                         f"{address!r} is not an IPv4 address"))
                continue
        specs.append(BareHostSpec(name, address))
    return errors, BareLabSpec(specs)


def _check_names(specs: list[BareHostSpec], key: str) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        try:
            check_bare_host_name(spec.name)
        except LabError as e:
            errors.append(FieldError(f"{key}[{i}].name", str(e)))
        if spec.name in seen:
            errors.append(FieldError(f"{key}[{i}].name", f"duplicate host {spec.name!r}"))
        seen.add(spec.name)
    return errors
