"""Synthetic multi-camera scenes with ground truth: a hall, cameras on its walls, walking people.

``make_scene(SceneOptions(...), out_dir)`` writes ``camX.mp4``, ``gt/camX.txt`` (MOTChallenge,
global person ids) and ``scene.json``; ``crosscam samples make`` is its command line.
"""

from samples.make import check_options, check_out_folder, make_scene
from samples.render import CameraRenderer, make_textures
from samples.layout import build_scene
from samples.scene import Camera, Person, Scene, SceneOptions

__all__ = [
    "Camera", "CameraRenderer", "Person", "Scene", "SceneOptions", "build_scene", "check_options", "check_out_folder", "make_scene",
    "make_textures",
]
