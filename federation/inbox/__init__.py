"""The resident's portal inbox: notices from every member system (circulation, health, connectors)."""
