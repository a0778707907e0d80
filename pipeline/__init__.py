"""crosscam's video side: per-camera tracking (``pipeline.video``), cross-camera identities and the store
(``pipeline.identity``), the modules both use, the CLI.

Uses ``reid`` only through its public API.
"""
