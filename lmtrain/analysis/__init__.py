"""Looking inside a model: the subject-verb agreement probe and the gradient flow through time."""
