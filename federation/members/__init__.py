"""Member institutions (libraries, hospitals, outside systems) and their service points."""
