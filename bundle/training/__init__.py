"""Training state without pickle: a typed tensor + JSON codec, restored into the
user's own PyTorch or Keras objects."""
