"""crosscam's videos and cameras: per-camera tracking (``pipeline.video``), cross-camera identities and
the store (``pipeline.identity``), the modules both use, the capabilities on top (``scale``, ``serve``) and the CLI.

Uses ``reid`` only through its public API.
"""
