"""The `kubernetes` provider type: Pods, Deployments and Services applied to a cluster
(kubeconfig, server-side apply) or, with none configured, to podman with `podman kube
play` (docs/deployments.md, "Kubernetes apply")."""

from typing import TYPE_CHECKING, Any

from providers.kubernetes._errors import KubernetesRefused, KubernetesUnavailable, NameTaken

if TYPE_CHECKING:
    from providers.kubernetes._provider import KubernetesProvider

__all__ = ["KubernetesProvider", "KubernetesRefused", "KubernetesUnavailable", "NameTaken"]


def __getattr__(name: str) -> Any:
    # The provider (and a backend's client library) is imported when an instance is
    # made, not by whoever only needs the errors.
    if name == "KubernetesProvider":
        from providers.kubernetes._provider import KubernetesProvider

        return KubernetesProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
