"""voxline.providers."""
