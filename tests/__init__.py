"""The test suite; a package so that tests import the rig as ``tests.rig`` under pytest and mypy."""
