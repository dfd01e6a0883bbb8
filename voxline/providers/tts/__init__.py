"""voxline.providers.tts."""
