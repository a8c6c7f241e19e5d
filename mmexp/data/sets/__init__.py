"""Published multimodal data sets, each read in the format it is distributed in."""
