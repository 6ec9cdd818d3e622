"""The record stage."""
