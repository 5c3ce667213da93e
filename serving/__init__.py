"""BentoML prediction service: request models, prediction functions, model loading, auth and prediction log."""
