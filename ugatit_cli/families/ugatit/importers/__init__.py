"""Converters from the official U-GAT-IT checkpoint formats to ours (one module per format)."""
