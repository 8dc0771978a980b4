"""Hypothesis strategies and conformance properties (collected by pytest)."""
