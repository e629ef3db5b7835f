"""Built-in experiment configs for ``fpk run NAME``."""
