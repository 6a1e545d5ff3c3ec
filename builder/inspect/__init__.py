"""Looking at a build: verify, inspect, preview."""
