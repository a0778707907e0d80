"""One camera's video into tracks: sources, detectors, tracker, refinements, its files. Never imports ``pipeline.identity``."""
