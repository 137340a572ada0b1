"""Masklet stores: identity, on-disk format, reader, writer, the build and its coordination (docs/architecture.md)."""
