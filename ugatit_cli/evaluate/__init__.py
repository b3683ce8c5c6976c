"""``ugatit eval``: KID/FID of translations against real images (features, metrics, the comparisons)."""
