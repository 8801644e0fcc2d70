"""Training: matcher, losses, COCO data, augmentation, the training engine and COCO evaluation."""
