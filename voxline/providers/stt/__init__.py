"""voxline.providers.stt."""
