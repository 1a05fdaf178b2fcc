"""Test package (lets tests import the builders as `from tests.tiny import ...`)."""
