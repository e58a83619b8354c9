"""Isolation backends behind one interface (``base.Backend``): sim, runc."""
