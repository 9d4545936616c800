"""OpenAnomaly: anomaly detection for Prometheus-compatible TSDBs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("openanomaly")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"
