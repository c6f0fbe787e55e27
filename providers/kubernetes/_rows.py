"""Objects as seed 000 lists them (`GET /kubernetes/pods|deployments|services|crds`),
from a cluster's objects; podman's pods are shaped in `_podman`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]


def age(created: str | None, now: datetime | None = None) -> str:
    """kubectl's age of a timestamp: `42s`, `5m`, `3h`, `2d` (empty when unknown)."""
    text = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", str(created or "").replace("Z", "+00:00"))
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return ""
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - stamp).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _meta(obj: JSON) -> JSON:
    meta: JSON = obj.get("metadata") or {}
    return meta


def pod_row(pod: JSON) -> JSON:
    meta, spec, status = _meta(pod), pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    return {
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", "default"),
        "status": status.get("phase", "Unknown"),
        "ready": f"{ready}/{len(spec.get('containers') or [])}",
        "restarts": sum(int(c.get("restartCount") or 0) for c in statuses),
        "age": age(meta.get("creationTimestamp")),
        "ip": status.get("podIP", ""),
        "node": spec.get("nodeName", ""),
        "labels": meta.get("labels") or {},
    }


def deployment_row(deployment: JSON) -> JSON:
    meta, spec, status = (
        _meta(deployment),
        deployment.get("spec") or {},
        deployment.get("status") or {},
    )
    return {
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", "default"),
        "ready": f"{status.get('readyReplicas') or 0}/{spec.get('replicas', 1)}",
        "up_to_date": status.get("updatedReplicas") or 0,
        "available": status.get("availableReplicas") or 0,
        "age": age(meta.get("creationTimestamp")),
    }


def service_row(service: JSON) -> JSON:
    meta, spec = _meta(service), service.get("spec") or {}
    ports = [
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
        f"{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    ]
    return {
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", "default"),
        "type": spec.get("type", "ClusterIP"),
        "cluster_ip": spec.get("clusterIP", ""),
        "ports": ports,
        "selector": spec.get("selector") or {},
        "age": age(meta.get("creationTimestamp")),
    }


def crd_row(crd: JSON) -> JSON:
    """Seed 000's CRD fields: name, group, version (the stored one), kind, scope, age."""
    meta, spec = _meta(crd), crd.get("spec") or {}
    versions = spec.get("versions") or []
    stored = next((v for v in versions if v.get("storage")), versions[0] if versions else {})
    return {
        "name": meta.get("name", ""),
        "group": spec.get("group", ""),
        "version": stored.get("name", ""),
        "kind": (spec.get("names") or {}).get("kind", ""),
        "scope": spec.get("scope", ""),
        "age": age(meta.get("creationTimestamp")),
    }


ROWS = {"pods": pod_row, "deployments": deployment_row, "services": service_row, "crds": crd_row}
