"""The package version (a leaf module, so any layer may read it)."""

VERSION = '0.1.0'
