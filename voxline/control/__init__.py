"""voxline.control."""
