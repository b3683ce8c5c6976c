"""pix2pixHD (Wang et al., CVPR 2018; official code NVIDIA/pix2pixHD) as a model family: label maps to photos."""
