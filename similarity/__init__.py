"""Reference-photo gallery and visual similarity search."""
