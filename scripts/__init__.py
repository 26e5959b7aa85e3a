"""Scripts with Python in them: a package only so that scripts.bench.settings is a dotted path."""
