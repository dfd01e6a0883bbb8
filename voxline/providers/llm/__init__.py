"""voxline.providers.llm."""
