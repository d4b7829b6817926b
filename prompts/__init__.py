"""Jinja prompt templates, one folder per task."""
