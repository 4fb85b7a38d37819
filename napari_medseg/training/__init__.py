"""Training: synthetic data for the default model, augmentation, losses, fine-tuning."""
