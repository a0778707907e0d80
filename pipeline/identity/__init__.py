"""Cameras' tracks into cross-camera identities: the common clock, association, the track store, queries, the report."""
