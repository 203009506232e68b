"""Data sources, their download and checking, and the prepared splits every stage reads."""
