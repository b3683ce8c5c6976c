"""Building blocks every layer may use: files, devices, progress display, images. No model knowledge."""
