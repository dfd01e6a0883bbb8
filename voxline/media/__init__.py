"""voxline.media."""
