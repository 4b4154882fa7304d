"""The studies: ``compare``, ``tune`` and ``path``, their settings, their output folders and the
storage they share across machines."""
