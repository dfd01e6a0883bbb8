"""voxline.transports."""
