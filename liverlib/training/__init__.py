"""Training the two networks fold by fold, and screening a setting on the folds."""
