"""Using a trained model: sampling text from it and scoring text with it."""
