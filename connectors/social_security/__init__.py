"""Social security (社保): card verification and linking, card status events, the resident's summary."""
