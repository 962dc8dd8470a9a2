import pytest

# The shared fixtures are imported by test modules before pytest loads them as a plugin: rewrite their asserts.
pytest.register_assert_rewrite("tests.verifier.fixtures")
