"""Loading TLC trip data, cleaning it, training and evaluating the models, writing versioned artifacts."""
