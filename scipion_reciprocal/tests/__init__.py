"""Tests of scipion-reciprocal.

Run with ``pytest`` (the conftest builds a throw-away Scipion home) or, module by module,
with ``python -m scipion tests scipion_reciprocal.tests.<module>``.
"""
