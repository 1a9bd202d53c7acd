"""Compatibility layers: ``octet.compat.bitsandbytes`` is bitsandbytes 0.49.2's API for the features
it removed (``import octet.compat.bitsandbytes as bitsandbytes``)."""
