"""Writing a build: the build folder, the frozen epochs, one shard at a time."""
