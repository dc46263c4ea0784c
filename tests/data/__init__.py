"""Tests of libai.data."""
