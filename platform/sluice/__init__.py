"""Sluice: one scoring contract run as batch (Ray Data), stream (Kafka) and online (Ray Serve),
with every output in Apache Cassandra."""

from sluice.config import PlatformConfig, load_platform_config
from sluice.errors import ConfigError, SluiceError

__all__ = ["ConfigError", "PlatformConfig", "SluiceError", "load_platform_config"]
__version__ = "0.1.0"
