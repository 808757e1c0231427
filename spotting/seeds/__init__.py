"""The seed systems (SOFTNet, LGNMNet, MEAN, LGSNet-style) as options of the platform, compared with the SpotMAE
spotter and the flow-only baseline on the same LOSO folds and metric (spotting.seeds.compare)."""
