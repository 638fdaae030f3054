"""Settings, the .arbiter.yml schema, defaults and the price table."""
