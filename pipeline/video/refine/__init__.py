"""What recorded video allows beyond an online tracker, each switchable by config (``tracker.*``,
``detector.low_confidence``) so its effect can be measured alone:

- :mod:`~pipeline.video.refine.low_confidence`: low-confidence boxes extend confirmed tracks (ByteTrack's
  second association); they never start one;
- :mod:`~pipeline.video.refine.camera_motion`: a moving camera's global motion compensated before the
  Kalman prediction (BoT-SORT);
- :mod:`~pipeline.video.refine.lookback`: a bounded look-back buffer in front of the sinks, where a
  confirmed track's tentative boxes are back-filled, its missed frames interpolated
  (:mod:`~pipeline.video.refine.interpolate`) and its boxes smoothed over the frames on both sides;
- :mod:`~pipeline.video.refine.relink`: after the video, fragments of one person joined (a motion gate,
  then appearance, one global assignment);
- after the video too, tracks none of whose boxes reached ``tracker.min_peak_confidence`` are
  dropped (:func:`pipeline.video.finalise.weak_tracks`).
"""
