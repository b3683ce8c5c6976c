"""ugatit-cli: U-GAT-IT image-to-image translation from the command line and from Python."""

__version__ = "0.1.0"
