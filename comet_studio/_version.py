"""The package version, in a module of its own so that core can stamp it into files without importing the
package ``__init__`` (which imports core)."""

__version__ = "0.1.0"
