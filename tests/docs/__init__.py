"""Tests of the documentation: samples run, links resolve."""
