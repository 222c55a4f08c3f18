"""AudioLDM2 (`cvssp/audioldm2` and random-weight tiny/bench sizes)."""
