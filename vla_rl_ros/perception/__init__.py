"""Perception (no ROS inside): camera frames to what the learner needs."""
