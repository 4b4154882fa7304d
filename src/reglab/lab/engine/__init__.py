"""How trials train: one ``fit`` per trial, populations of trials as one batched model, and the
worker processes that run them."""
