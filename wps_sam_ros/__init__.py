"""wps_sam_ros: the thin ROS 2 adapter over wps_sam_core (rclpy node, DDS transport, bag tools)."""
