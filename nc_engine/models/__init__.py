"""Loading a user's model, whatever its format, into an nn.Module that takes normalised images and returns logits."""
