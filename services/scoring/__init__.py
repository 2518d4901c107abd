"""Scoring service: indicators, scores, targets, campaigns and rankings."""
