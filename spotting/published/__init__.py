"""Published spotting methods re-implemented from their papers (SOFTNet, LGNMNet, MEAN, an LGSNet-style detector), as
options of the platform, compared with the SpotMAE spotter and the flow-only baseline on the same LOSO folds and
metric (spotting.published.compare)."""
