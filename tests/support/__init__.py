"""Helpers the tests share (never imported by production code)."""
