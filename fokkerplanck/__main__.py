"""``python -m fokkerplanck``: the main job on its built-in default."""
from fokkerplanck.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
