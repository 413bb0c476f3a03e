"""The kdcore version (``kdcore.__version__``), importable without the package's re-exports."""

__version__ = "0.1.0"
