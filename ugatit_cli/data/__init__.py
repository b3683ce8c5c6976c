"""Training data streams whose batches depend only on (seed, stream, epoch, position)."""
