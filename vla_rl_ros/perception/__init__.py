"""Perception, no ROS inside: camera frames to an object pose (OpenCV ArUco, :mod:`.aruco`; perception_node is
the shell) and to success (the learned success classifier, :mod:`.success`; frames saved by the recorder, :mod:`.frames`)."""
