"""Real local servers for development, demos and tests: `sluice local up | down | status`."""

from sluice.local._ray import SYSTEM_CONFIG as RAY_SYSTEM_CONFIG
from sluice.local._services import SERVICES, LocalServices, ServiceStatus

__all__ = ["RAY_SYSTEM_CONFIG", "SERVICES", "LocalServices", "ServiceStatus"]
