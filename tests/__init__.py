"""Tests of the project's own code."""
