"""mlflow-compat: MLflow client/server compatibility across upgrades and backend stores."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlflow-compat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
