"""voxline.codecs."""
