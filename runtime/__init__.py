"""Image -> running process."""
