"""crosscam's video side: sources, detectors, tracking, cross-camera identities, store, CLI.

Uses ``reid`` only through its public API.
"""
