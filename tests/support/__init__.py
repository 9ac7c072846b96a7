"""Helpers shared by the test suites (the deterministic HTTP stub lives in `stub_api`)."""
