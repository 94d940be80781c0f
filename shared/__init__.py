"""The package the segments services share: settings, database, migrations, models,
conditions, profile merge, membership store and Redis keys."""
