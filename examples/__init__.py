"""The seed examples, shipped as package data so `backflush demo` works from a wheel."""
