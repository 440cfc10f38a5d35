"""Dataset tools (``lmt data ...``): small real and synthetic sample datasets to train and test on."""
