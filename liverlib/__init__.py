"""liverlib: a reproducible companion to the Mixed-UNet paper on liver and liver-lesion segmentation in CT."""
