"""Real local servers for development, demos and tests: `sluice local up | down | status`."""

from sluice.local._services import SERVICES, LocalServices, ServiceStatus

__all__ = ["SERVICES", "LocalServices", "ServiceStatus"]
