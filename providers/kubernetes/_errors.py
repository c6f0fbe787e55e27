"""What the backends' failures are, without their client libraries: the API imports these
to map them to answers (the `kubernetes` client is imported only by a cluster backend)."""

from __future__ import annotations

from providers.base import PermanentProviderError, ProviderError


class KubernetesUnavailable(ProviderError):
    """Neither a cluster nor podman answers (retried: it may come back)."""


class KubernetesRefused(PermanentProviderError):
    """The backend refused the object (an image that cannot be had, a port in use, a
    kind it does not run, the cluster's own validation): not retried."""


class NameTaken(KubernetesRefused):
    """The name is held by an object of another namespace (podman has one namespace)."""
