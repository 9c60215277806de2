"""The federation core: settings, database, application, identity, accounts, consent, audit and jobs."""
