"""voxline.agent."""
