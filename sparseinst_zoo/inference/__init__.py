"""Inference: preprocessing, postprocessing, the predictor, Results and visualisation."""
