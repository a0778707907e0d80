"""``crosscam serve``: a local web app to click a person in any camera and see every camera they
appeared in, and when.

A thin HTTP layer (:mod:`pipeline.serve.app`) over ``pipeline.identity.query``, ``pipeline.identity.store`` and
``pipeline.identity.report``: its answers are the objects ``crosscam query --json`` prints. The run is
read through :class:`pipeline.serve.run_view.RunView` (one store generation per answer, nothing
written into the run); frames are decoded on demand as JPEG (:mod:`pipeline.serve.frames`); the
page (``static/``: plain HTML, CSS and JS, nothing fetched from the internet) draws the boxes.
"""

from pipeline.serve.app import create_app

__all__ = ["create_app"]
