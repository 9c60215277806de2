"""Circulation across member libraries: readers, loans, returns anywhere, transits, renewals."""
