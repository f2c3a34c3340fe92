"""Model monitoring: serving-side drift and quality signals, their reference, live quality, reports."""
