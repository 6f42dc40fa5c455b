"""Triplet greylisting, and the same as a Postfix policy service."""
