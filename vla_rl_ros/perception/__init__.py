"""Camera -> object pose (OpenCV ArUco): no ROS inside (perception_node is the shell)."""
