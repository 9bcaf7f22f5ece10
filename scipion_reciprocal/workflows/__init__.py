"""Chains of protocols: the demo (and, later, workflow builders)."""
