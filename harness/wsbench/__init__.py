"""wsbench: a benchmark harness for weight-space learning."""
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("wsbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
